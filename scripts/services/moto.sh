#!/usr/bin/env bash
# moto in server mode: the S3-compatible store the claim-check S3 test runs against.
#
#   scripts/services/moto.sh start     install moto (a venv, `pip install moto[server]`)
#                                      if missing, start it, wait until it answers
#   scripts/services/moto.sh stop      stop the server
#   scripts/services/moto.sh status    exit 0 when the server answers
#   scripts/services/moto.sh env       print `export TIDINGS_S3_URL=...`
#   scripts/services/moto.sh install   only install moto
#
# Listens on 127.0.0.1:4566 ($TIDINGS_S3_PORT). Keeps everything in memory: buckets are
# lost on restart, so the test creates its own. The venv lives in
# $TIDINGS_SERVICES_DIR/moto/venv (MOTO_VERSION pins the version).
set -euo pipefail

SERVICE=moto
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MOTO_DIR="$TIDINGS_SERVICES_DIR/moto"
MOTO_VENV="$MOTO_DIR/venv"
MOTO_PORT="${TIDINGS_S3_PORT:-4566}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
START_TIMEOUT="${TIDINGS_S3_START_TIMEOUT:-60}"

install() {
    if [ -x "$MOTO_VENV/bin/moto_server" ]; then
        return 0
    fi
    local t0
    t0="$(now_s)"
    ensure_dir "$MOTO_DIR"
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    log "installing moto[server] $MOTO_VERSION into $MOTO_VENV"
    rm -rf "$MOTO_VENV"
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
    log "installed in $(elapsed "$t0")s"
}

server_pid() {
    local pid
    [ -s "$MOTO_DIR/moto.pid" ] || return 0
    pid="$(cat "$MOTO_DIR/moto.pid")"
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'moto'; then
        echo "$pid"
    fi
}

answers() {
    port_open 127.0.0.1 "$MOTO_PORT" &&
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
            "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1
}

start() {
    local t0
    t0="$(now_s)"
    install
    if [ -n "$(server_pid)" ] && answers; then
        log "already running on 127.0.0.1:$MOTO_PORT (pid $(server_pid))"
        return 0
    fi
    if [ -n "$(server_pid)" ]; then
        log "pid $(server_pid) does not answer; stopping it"
        stop
    fi
    if port_open 127.0.0.1 "$MOTO_PORT"; then
        die "port $MOTO_PORT is taken by another process: $(ss -ltnpH "sport = :$MOTO_PORT" 2>/dev/null | head -n 1)"
    fi
    log "starting moto_server on 127.0.0.1:$MOTO_PORT (log: $MOTO_DIR/moto.log)"
    (
        cd "$MOTO_DIR"
        setsid "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" \
            </dev/null >>"$MOTO_DIR/moto.log" 2>&1 8>&- &
        echo $! >"$MOTO_DIR/moto.pid"
    )
    local i=0
    until answers; do
        if [ -z "$(server_pid)" ]; then
            tail -n 40 "$MOTO_DIR/moto.log" >&2 || true
            die "moto_server exited during startup"
        fi
        i=$((i + 1))
        if [ "$i" -gt $((START_TIMEOUT * 5)) ]; then
            tail -n 40 "$MOTO_DIR/moto.log" >&2 || true
            die "no answer after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "ready in $(elapsed "$t0")s: http://127.0.0.1:$MOTO_PORT"
}

stop() {
    local pid i=0
    pid="$(server_pid)"
    if [ -z "$pid" ]; then
        log "not running"
        rm -f "$MOTO_DIR/moto.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -eq 50 ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        [ "$i" -le 100 ] || die "pid $pid did not exit"
        sleep 0.2
    done
    rm -f "$MOTO_DIR/moto.pid"
    log "stopped"
}

case "${1:-}" in
start | stop) lock_service ;;
esac
case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if [ -n "$(server_pid)" ] && answers; then
        log "running on 127.0.0.1:$MOTO_PORT (pid $(server_pid))"
    else
        log "not running"
        exit 1
    fi
    ;;
env) print_env TIDINGS_S3_URL "http://127.0.0.1:$MOTO_PORT" ;;
install) install ;;
*)
    echo "usage: $0 {start|stop|status|env|install}" >&2
    exit 2
    ;;
esac
