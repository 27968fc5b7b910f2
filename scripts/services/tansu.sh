#!/usr/bin/env bash
# tansu, the Kafka-API broker the Kafka tests run against (Apache-2.0, crates.io).
#
#   scripts/services/tansu.sh start     install tansu if missing, start it, wait until a
#                                       metadata request works
#   scripts/services/tansu.sh stop      stop the broker (SIGTERM, then SIGKILL after 20s)
#   scripts/services/tansu.sh restart   stop and start again (a real broker restart: every
#                                       connection drops; see TANSU_STORAGE about data)
#   scripts/services/tansu.sh status    exit 0 when the broker answers a metadata request
#   scripts/services/tansu.sh env       print `export TIDINGS_KAFKA_*=...` lines
#   scripts/services/tansu.sh install   only install the binary
#
# Listens on 127.0.0.1:9092 ($TIDINGS_KAFKA_PORT) and advertises that address.
#
# TANSU_STORAGE picks the storage engine (default memory://tansu/):
#   memory://tansu/     in the broker's memory: fast, but a restart loses every topic,
#                       record and committed offset
#   sqlite://tansu.db   a SQLite file, relative to the broker's state dir
#                       ($TIDINGS_SERVICES_DIR/tansu, or .../tansu/port-N off 9092): survives
#                       restarts (needs the binary built with the `libsql` feature)
#   postgres://...      a PostgreSQL database whose schema was loaded beforehand (needs
#                       the `postgres` feature)
# The binary is installed with `cargo install tansu --locked --features dynostore,libsql`
# ($TANSU_FEATURES, plus the feature the chosen engine needs): the shared broker runs on
# memory storage, and the Kafka restart and SASL tests start private brokers on SQLite.
# An installed binary that lacks one of those engines is rebuilt (`tansu --help` lists
# them). TANSU_VERSION pins the crate version. TANSU_BIN points at a binary to use.
set -euo pipefail

SERVICE=tansu
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TANSU_DIR="$TIDINGS_SERVICES_DIR/tansu"
TANSU_PORT="${TIDINGS_KAFKA_PORT:-9092}"
TANSU_STORAGE_SET="${TANSU_STORAGE:+1}"
TANSU_STORAGE="${TANSU_STORAGE:-memory://tansu/}"
START_TIMEOUT="${TIDINGS_KAFKA_START_TIMEOUT:-60}"
TANSU_FEATURES="${TANSU_FEATURES:-dynostore,libsql}"
CARGO_BIN_DIR="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
# Pid, storage, log and SQLite files of the broker on this port (one broker per port).
if [ "$TANSU_PORT" = 9092 ]; then
    TANSU_STATE="$TANSU_DIR"
    LOCK_NAME=tansu
else
    TANSU_STATE="$TANSU_DIR/port-$TANSU_PORT"
    LOCK_NAME="tansu-$TANSU_PORT"
fi
DAEMON_DIR="$TANSU_STATE"
DAEMON_PORT="$TANSU_PORT"
DAEMON_MATCH=tansu
DAEMON_URL="127.0.0.1:$TANSU_PORT"

# The storage engine feature that TANSU_STORAGE needs.
needed_feature() {
    case "$TANSU_STORAGE" in
    memory:* | s3:*) echo dynostore ;;
    sqlite:*) echo libsql ;;
    postgres:* | postgresql:*) echo postgres ;;
    *) die "unsupported TANSU_STORAGE '$TANSU_STORAGE' (memory://, sqlite://, postgres://)" ;;
    esac
}

find_tansu() {
    if [ -n "${TANSU_BIN:-}" ]; then
        [ -x "$TANSU_BIN" ] || die "TANSU_BIN=$TANSU_BIN is not executable"
        echo "$TANSU_BIN"
    elif [ -x "$CARGO_BIN_DIR/tansu" ]; then
        echo "$CARGO_BIN_DIR/tansu"
    elif command -v tansu >/dev/null 2>&1; then
        command -v tansu
    fi
}

# The features to build with: $TANSU_FEATURES plus what TANSU_STORAGE needs.
wanted_features() {
    local f need
    need="$(needed_feature)"
    f="$TANSU_FEATURES"
    case ",$f," in
    *",$need,"*) ;;
    *) f="$f,$need" ;;
    esac
    echo "$f"
}

# True when the binary was built with every storage engine feature in $2 (comma
# separated). `tansu --help` ends with "Storage engines: dynostore, libsql, ...".
has_engines() {
    local engines f
    engines="$("$1" --help 2>/dev/null | grep '^Storage engines:' || true)"
    for f in ${2//,/ }; do
        grep -qw -- "$f" <<<"$engines" || return 1
    done
}

install() {
    local features bin
    features="$(wanted_features)"
    bin="$(find_tansu)"
    if [ -n "$bin" ] && has_engines "$bin" "$features"; then
        return 0
    fi
    if [ -n "${TANSU_BIN:-}" ]; then
        # A binary given by hand only needs the engine of the chosen storage.
        has_engines "$TANSU_BIN" "$(needed_feature)" ||
            die "$TANSU_BIN lacks the '$(needed_feature)' storage engine"
        return 0
    fi
    command -v cargo >/dev/null || die "cargo is needed to install tansu"
    ensure_dir "$TIDINGS_SERVICES_DIR"
    ensure_dir "$TANSU_DIR"
    local version_arg=()
    [ -z "${TANSU_VERSION:-}" ] || version_arg=(--version "$TANSU_VERSION")
    if [ -n "$bin" ]; then
        log "$bin lacks a storage engine of: $features; rebuilding it"
    fi
    (
        # One install at a time (scripts/test may be run twice at once).
        flock -w 3600 9 || die "timed out waiting for another tansu install"
        bin="$(find_tansu)"
        if [ -n "$bin" ] && has_engines "$bin" "$features"; then
            exit 0
        fi
        local t0
        t0="$(now_s)"
        log "installing: cargo install tansu --locked --features $features (about 10-15 minutes the first time; log: $TANSU_DIR/install.log)"
        # Outside any workspace, with its own target dir (kept until success so an
        # interrupted install resumes), so it never waits on the project's build lock.
        cd "$TANSU_DIR"
        if ! env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
            cargo install tansu "${version_arg[@]}" --locked --force --features "$features" \
            --target-dir "$TANSU_DIR/build" >"$TANSU_DIR/install.log" 2>&1 </dev/null 8>&- 9>&-; then
            tail -n 40 "$TANSU_DIR/install.log" >&2
            die "cargo install tansu failed (full log: $TANSU_DIR/install.log)"
        fi
        rm -rf "$TANSU_DIR/build"
        log "installed $("$CARGO_BIN_DIR/tansu" --version) in $(elapsed "$t0")s"
    ) 9>"$TIDINGS_SERVICES_DIR/tansu-install.lock"
    bin="$(find_tansu)"
    if [ -z "$bin" ] || ! has_engines "$bin" "$features"; then
        die "tansu was installed but ${bin:-$CARGO_BIN_DIR/tansu} lacks a storage engine of: $features"
    fi
}

# The pid of our running broker, or nothing.
# A metadata request through tansu's own client.
answers() {
    local bin
    bin="$(find_tansu)"
    [ -n "$bin" ] && port_open 127.0.0.1 "$TANSU_PORT" &&
        timeout 10 "$bin" topic list --broker "tcp://127.0.0.1:$TANSU_PORT" >/dev/null 2>&1
}

start() {
    install
    if [ -n "$(daemon_pid)" ] && [ -n "$TANSU_STORAGE_SET" ] &&
        [ "$(cat "$TANSU_STATE/storage" 2>/dev/null)" != "$TANSU_STORAGE" ]; then
        log "running with storage $(cat "$TANSU_STATE/storage" 2>/dev/null || echo '?'), TANSU_STORAGE asks for $TANSU_STORAGE: restarting"
        daemon_stop
    fi
    local bin
    bin="$(find_tansu)"
    ensure_dir "$TANSU_DIR"
    daemon_start "$("$bin" --version) (storage $TANSU_STORAGE)" \
        env RUST_LOG="${TANSU_LOG:-warn}" "$bin" broker \
        --cluster-id tidings \
        --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
        --storage-engine "$TANSU_STORAGE"
    if [ "$DAEMON_STARTED" = 1 ]; then
        echo "$TANSU_STORAGE" >"$TANSU_STATE/storage"
    fi
}

case "${1:-}" in
start | stop | restart) lock_service ;;
esac
case "${1:-}" in
start) start ;;
stop) daemon_stop ;;
restart)
    t0="$(now_s)"
    case "$(cat "$TANSU_STATE/storage" 2>/dev/null || echo "$TANSU_STORAGE")" in
    memory:*) log "note: memory storage, the restart drops every topic, record and offset" ;;
    esac
    # Restart with the storage the broker was started with.
    if [ -s "$TANSU_STATE/storage" ] && [ -n "$(daemon_pid)" ]; then
        TANSU_STORAGE="$(cat "$TANSU_STATE/storage")"
    fi
    daemon_stop
    start
    log "restarted in $(elapsed "$t0")s"
    ;;
status) daemon_status "127.0.0.1:$TANSU_PORT" "storage $(cat "$TANSU_STATE/storage" 2>/dev/null || echo '?')" ;;
env)
    storage="$TANSU_STORAGE"
    if [ -n "$(daemon_pid)" ] && [ -s "$TANSU_STATE/storage" ]; then
        storage="$(cat "$TANSU_STATE/storage")"
    fi
    print_env \
        TIDINGS_KAFKA_BROKERS "127.0.0.1:$TANSU_PORT" \
        TIDINGS_KAFKA_CTL "$SERVICES_SCRIPT_DIR/tansu.sh" \
        TIDINGS_KAFKA_STORAGE "$storage"
    ;;
install) install ;;
*)
    echo "usage: $0 {start|stop|restart|status|env|install}" >&2
    exit 2
    ;;
esac
