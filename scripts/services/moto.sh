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
DAEMON_DIR="$MOTO_DIR"
DAEMON_PORT="$MOTO_PORT"
DAEMON_MATCH=moto
DAEMON_URL="http://127.0.0.1:$MOTO_PORT"

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

answers() {
    port_open 127.0.0.1 "$MOTO_PORT" &&
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
            "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1
}

start() {
    install
    daemon_start moto_server "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
}

case "${1:-}" in
start | stop) lock_service ;;
esac
case "${1:-}" in
start) start ;;
stop) daemon_stop ;;
status) daemon_status "127.0.0.1:$MOTO_PORT" ;;
env) print_env TIDINGS_S3_URL "http://127.0.0.1:$MOTO_PORT" ;;
install) install ;;
*)
    echo "usage: $0 {start|stop|status|env|install}" >&2
    exit 2
    ;;
esac
