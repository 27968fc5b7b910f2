#!/usr/bin/env bash
# Azurite's blob service: the Azure Blob storage emulator the claim-check Azure test runs
# against.
#
#   scripts/services/azurite.sh start     install Azurite (`npm install azurite`) if
#                                         missing, start its blob service, wait until it
#                                         answers
#   scripts/services/azurite.sh stop      stop the server
#   scripts/services/azurite.sh status    exit 0 when the server answers
#   scripts/services/azurite.sh env       print `export TIDINGS_AZURE_BLOB_URL=...`
#   scripts/services/azurite.sh install   only install Azurite
#
# Listens on 127.0.0.1:10000 ($TIDINGS_AZURE_BLOB_PORT) with Azurite's well-known
# development account `devstoreaccount1` (its key is public, in Microsoft's Azurite
# documentation); only the blob service runs, not queues or tables. Blobs are kept in
# $TIDINGS_SERVICES_DIR/azurite/data across restarts; the test creates its own container.
# Azurite is installed with npm (Node.js 20 or newer, Debian nodejs and npm when missing)
# into $TIDINGS_SERVICES_DIR/azurite/npm (AZURITE_VERSION pins the version).
set -euo pipefail

SERVICE=azurite
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZURITE_DIR="$TIDINGS_SERVICES_DIR/azurite"
AZURITE_NPM="$AZURITE_DIR/npm"
AZURITE_BIN="$AZURITE_NPM/node_modules/.bin/azurite-blob"
AZURITE_PORT="${TIDINGS_AZURE_BLOB_PORT:-10000}"
AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
START_TIMEOUT="${TIDINGS_AZURE_BLOB_START_TIMEOUT:-60}"
DAEMON_DIR="$AZURITE_DIR"
DAEMON_PORT="$AZURITE_PORT"
DAEMON_MATCH=azurite
DAEMON_URL="http://127.0.0.1:$AZURITE_PORT/devstoreaccount1"

installed_version() {
    node -p "require('$AZURITE_NPM/node_modules/azurite/package.json').version" 2>/dev/null || true
}

install() {
    if [ -x "$AZURITE_BIN" ] && [ "$(installed_version)" = "$AZURITE_VERSION" ]; then
        return 0
    fi
    local t0
    t0="$(now_s)"
    ensure_dir "$AZURITE_DIR"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    log "installing azurite $AZURITE_VERSION into $AZURITE_NPM (npm)"
    rm -rf "$AZURITE_NPM"
    mkdir -p "$AZURITE_NPM"
    npm install --prefix "$AZURITE_NPM" --no-audit --no-fund --no-update-notifier \
        --omit=dev --loglevel=error "azurite@$AZURITE_VERSION" >&2
    [ -x "$AZURITE_BIN" ] || die "npm installed no $AZURITE_BIN"
    log "installed in $(elapsed "$t0")s"
}

# answers: the port is open and what answers there is Azurite's blob service (any HTTP
# status, an anonymous request is refused; the `Server` header names it).
answers() {
    port_open 127.0.0.1 "$AZURITE_PORT" &&
        python3 - "$AZURITE_PORT" >/dev/null 2>&1 <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/devstoreaccount1?comp=list")
r = c.getresponse()
sys.exit(0 if (r.getheader("Server") or "").startswith("Azurite-Blob") else 1)
PY
}

start() {
    install
    ensure_dir "$AZURITE_DIR/data"
    daemon_start azurite-blob "$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
        --location "$AZURITE_DIR/data" --skipApiVersionCheck --loose --disableTelemetry
}

case "${1:-}" in
start | stop) lock_service ;;
esac
case "${1:-}" in
start) start ;;
stop) daemon_stop ;;
status) daemon_status "127.0.0.1:$AZURITE_PORT" ;;
env) print_env TIDINGS_AZURE_BLOB_URL "http://127.0.0.1:$AZURITE_PORT/devstoreaccount1" ;;
install) install ;;
*)
    echo "usage: $0 {start|stop|status|env|install}" >&2
    exit 2
    ;;
esac
