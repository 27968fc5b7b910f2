# shellcheck shell=bash
# Shared helpers for scripts/services/*.sh. Sourced, never run.
#
# Every service keeps its state under $TIDINGS_SERVICES_DIR (default
# /tmp/tidings-services): one directory per service plus `tls/` with the test
# certificates. The directory is outside the repository on purpose: the brokers
# listen on fixed loopback ports, so there is one set per machine, shared by
# every checkout.

TIDINGS_SERVICES_DIR="${TIDINGS_SERVICES_DIR:-/tmp/tidings-services}"
# shellcheck disable=SC2034  # used by the scripts that source this file
SERVICES_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# log MESSAGE...: a progress line on stderr, prefixed with the service name.
log() {
    printf '[%s] %s\n' "${SERVICE:-services}" "$*" >&2
}

# die MESSAGE...: an error line on stderr, then exit 1.
die() {
    printf '[%s] ERROR: %s\n' "${SERVICE:-services}" "$*" >&2
    exit 1
}

# now_s: seconds since the epoch, with fractions, for timing steps.
now_s() {
    date +%s.%N
}

# elapsed START: seconds since START, one decimal.
elapsed() {
    awk -v s="$1" -v e="$(now_s)" 'BEGIN { printf "%.1f", e - s }'
}

# ensure_dir DIR [OWNER]: create DIR (mode 755), chown it to OWNER if given.
ensure_dir() {
    mkdir -p "$1"
    chmod 755 "$1"
    if [ -n "${2:-}" ]; then
        chown "$2" "$1"
    fi
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_port HOST PORT SECONDS: wait until the port accepts connections.
wait_port() {
    local host="$1" port="$2" limit="$3" i=0
    while ! port_open "$host" "$port"; do
        i=$((i + 1))
        if [ "$i" -ge $((limit * 5)) ]; then
            return 1
        fi
        sleep 0.2
    done
}

# as_root: fail unless running as root (installing packages and switching to
# the service users needs it; CI and the development machines run as root).
as_root() {
    if [ "$(id -u)" -ne 0 ]; then
        die "must run as root (installs Debian packages and runs the server as its own user)"
    fi
}

# apt_install PACKAGE...: install Debian packages that are missing. Runs
# `apt-get update` at most once a day (marker file), serialises concurrent
# callers with a lock (scripts/test starts the services in parallel), and never
# starts the packaged service (policy-rc.d may be absent on a fresh machine, in
# which case the caller stops what the package started).
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    as_root
    ensure_dir "$TIDINGS_SERVICES_DIR"
    local lock="$TIDINGS_SERVICES_DIR/apt.lock" marker="$TIDINGS_SERVICES_DIR/apt-updated"
    local start
    start="$(now_s)"
    log "installing Debian packages: ${missing[*]} (apt-get, may take a few minutes)"
    (
        flock -w 1800 9 || die "timed out waiting for another apt-get run ($lock)"
        export DEBIAN_FRONTEND=noninteractive
        local apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 -q)
        if [ -z "$(find "$marker" -mmin -1440 2>/dev/null)" ]; then
            apt-get "${apt_opts[@]}" update >"$TIDINGS_SERVICES_DIR/apt-update.log" 2>&1 8>&- 9>&- ||
                { tail -n 20 "$TIDINGS_SERVICES_DIR/apt-update.log" >&2; die "apt-get update failed"; }
            touch "$marker"
        fi
        apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" \
            >"$TIDINGS_SERVICES_DIR/apt-install-${SERVICE:-x}.log" 2>&1 </dev/null 8>&- 9>&- ||
            { tail -n 30 "$TIDINGS_SERVICES_DIR/apt-install-${SERVICE:-x}.log" >&2; die "apt-get install ${missing[*]} failed"; }
    ) 9>"$lock"
    log "installed ${missing[*]} in $(elapsed "$start")s"
}

# lock_service: hold an exclusive lock on fd 8 for the rest of the script, so two
# start/stop/restart calls for one service never interleave. Processes the script
# launches must close fd 8 (`8>&-`), or they would keep the lock.
lock_service() {
    ensure_dir "$TIDINGS_SERVICES_DIR"
    local lock="$TIDINGS_SERVICES_DIR/${LOCK_NAME:-$SERVICE}.lock"
    exec 8>"$lock"
    flock -w 900 8 || die "timed out waiting for another $SERVICE start/stop ($lock)"
}

# print_env NAME VALUE...: `export NAME='VALUE'` lines for `eval`.
print_env() {
    while [ "$#" -ge 2 ]; do
        printf "export %s=%q\n" "$1" "$2"
        shift 2
    done
}

# ensure_tls: create (once) the test PKI in $TIDINGS_TLS_DIR:
#   ca.pem / ca.key            a self-signed CA
#   server.pem / server.key    server certificate, SAN localhost + 127.0.0.1 + ::1
#   client.pem / client.key    client certificate (CN tidings-client) for mutual TLS
#   client.p12                 the client key and chain as PKCS#12, password "tidings"
# Keys are PKCS#8 PEM. Valid ten years; regenerated when a file is missing or a
# certificate expires within a day. Readable by the `rabbitmq` group when it
# exists, so the broker can load server.key.
TIDINGS_TLS_DIR="${TIDINGS_TLS_DIR:-$TIDINGS_SERVICES_DIR/tls}"
ensure_tls() {
    local dir="$TIDINGS_TLS_DIR" f ok=1
    for f in ca.pem ca.key server.pem server.key client.pem client.key client.p12; do
        [ -s "$dir/$f" ] || ok=0
    done
    if [ "$ok" = 1 ]; then
        for f in ca.pem server.pem client.pem; do
            openssl x509 -checkend 86400 -noout -in "$dir/$f" >/dev/null 2>&1 || ok=0
        done
    fi
    if [ "$ok" = 0 ]; then
        log "generating test certificates in $dir"
        ensure_dir "$dir"
        local tmp
        tmp="$(mktemp -d "$dir/.gen.XXXXXX")"
        (
            set -e
            cd "$tmp"
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key 2>/dev/null
            openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=tidings test CA" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign" \
                -addext "subjectKeyIdentifier=hash" -out ca.pem
            local name
            for name in server client; do
                openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key" 2>/dev/null
                if [ "$name" = server ]; then
                    openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
                    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
                        "keyUsage=critical,digitalSignature,keyEncipherment" \
                        "extendedKeyUsage=serverAuth" \
                        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
                        "authorityKeyIdentifier=keyid" >server.ext
                else
                    openssl req -new -key client.key -subj "/CN=tidings-client" -out client.csr
                    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
                        "keyUsage=critical,digitalSignature,keyEncipherment" \
                        "extendedKeyUsage=clientAuth" \
                        "subjectAltName=DNS:tidings-client" \
                        "authorityKeyIdentifier=keyid" >client.ext
                fi
                openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
                    -days 3650 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
                openssl verify -CAfile ca.pem "$name.pem" >/dev/null
            done
            openssl pkcs12 -export -inkey client.key -in client.pem -certfile ca.pem \
                -name tidings-client -passout pass:tidings -out client.p12
            rm -f ./*.csr ./*.ext ./*.srl
        ) || { rm -rf "$tmp"; die "openssl failed to generate the test certificates"; }
        for f in ca.pem ca.key server.pem server.key client.pem client.key client.p12; do
            mv -f "$tmp/$f" "$dir/$f"
        done
        rmdir "$tmp"
    fi
    chmod 644 "$dir"/*.pem
    chmod 640 "$dir"/*.key "$dir/client.p12"
    if getent group rabbitmq >/dev/null 2>&1; then
        chgrp rabbitmq "$dir"/*.key "$dir"/*.pem "$dir/client.p12"
    fi
}

# A service run as a plain background process (moto, Azurite, tansu) sets DAEMON_DIR (its
# state: the pid file $SERVICE.pid and the log $SERVICE.log), DAEMON_PORT, DAEMON_MATCH (a
# word of its command line, so a recycled pid is not taken for it), DAEMON_URL (for the
# "ready" line) and START_TIMEOUT, and defines `answers` (true when it serves requests).

# daemon_status WHERE [MORE]: say the daemon runs on WHERE (with its pid, and MORE) when it
# is alive and its script's `answers` succeeds; otherwise say it is not running and exit 1.
daemon_status() {
    if [ -n "$(daemon_pid)" ] && answers; then
        log "running on $1 (pid $(daemon_pid)${2:+, $2})"
    else
        log "not running"
        exit 1
    fi
}

# daemon_pid: the pid of the service's process while it runs; nothing otherwise.
daemon_pid() {
    local pid
    [ -s "$DAEMON_DIR/$SERVICE.pid" ] || return 0
    pid="$(cat "$DAEMON_DIR/$SERVICE.pid")"
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$DAEMON_MATCH"; then
        echo "$pid"
    fi
}

# daemon_start WHAT COMMAND...: start COMMAND in $DAEMON_DIR (its own session, output
# appended to the log) and wait until it answers, unless it already does. Sets
# DAEMON_STARTED=1 when it started the process. Fails, with the log's last lines, when
# another process holds the port, the process exits, or it does not answer within
# START_TIMEOUT seconds.
daemon_start() {
    local what="$1" t0 log="$DAEMON_DIR/$SERVICE.log" i=0
    shift
    t0="$(now_s)"
    DAEMON_STARTED=0
    if [ -n "$(daemon_pid)" ] && answers; then
        log "already running on 127.0.0.1:$DAEMON_PORT (pid $(daemon_pid))"
        return 0
    fi
    if [ -n "$(daemon_pid)" ]; then
        log "pid $(daemon_pid) does not answer; stopping it"
        daemon_stop
    fi
    if port_open 127.0.0.1 "$DAEMON_PORT"; then
        die "port $DAEMON_PORT is taken by another process: $(ss -ltnpH "sport = :$DAEMON_PORT" 2>/dev/null | head -n 1)"
    fi
    ensure_dir "$DAEMON_DIR"
    log "starting $what on 127.0.0.1:$DAEMON_PORT (log: $log)"
    (
        cd "$DAEMON_DIR"
        setsid "$@" </dev/null >>"$log" 2>&1 8>&- &
        echo $! >"$DAEMON_DIR/$SERVICE.pid"
    )
    DAEMON_STARTED=1
    until answers; do
        if [ -z "$(daemon_pid)" ]; then
            tail -n 40 "$log" >&2 || true
            die "$what exited during startup"
        fi
        i=$((i + 1))
        if [ "$i" -gt $((START_TIMEOUT * 5)) ]; then
            tail -n 40 "$log" >&2 || true
            die "no answer from $what after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "ready in $(elapsed "$t0")s: $DAEMON_URL"
}

# daemon_stop: SIGTERM, SIGKILL after 20 s, fail after 30 s; then wait (up to 10 s) for
# the port to be free, so a restart can bind it again.
daemon_stop() {
    local pid t0 i=0
    pid="$(daemon_pid)"
    if [ -z "$pid" ]; then
        log "not running"
        rm -f "$DAEMON_DIR/$SERVICE.pid"
        return 0
    fi
    t0="$(now_s)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -eq 100 ]; then
            log "pid $pid ignored SIGTERM for 20s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        [ "$i" -le 150 ] || die "pid $pid did not exit"
        sleep 0.2
    done
    i=0
    while port_open 127.0.0.1 "$DAEMON_PORT" && [ "$i" -lt 50 ]; do
        i=$((i + 1))
        sleep 0.2
    done
    rm -f "$DAEMON_DIR/$SERVICE.pid"
    log "stopped in $(elapsed "$t0")s"
}
