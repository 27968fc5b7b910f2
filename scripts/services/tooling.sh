#!/usr/bin/env bash
# What the `tidings` CLI tests use besides cargo (crates/tidings-cli/tests):
# Graphviz's `dot` renders `tidings graph --format dot`, and the official AsyncAPI
# parser (@asyncapi/parser from npm, run with the machine's Node.js) checks
# `tidings asyncapi`.
#
#   scripts/services/tooling.sh install   install what is missing: Debian graphviz when
#                                         `dot` is absent, Debian nodejs and npm when
#                                         `npm` is absent, then `npm ci` in
#                                         crates/tidings-cli/tests/asyncapi when its
#                                         node_modules has no parser
#   scripts/services/tooling.sh status    exit 0 when all of it is there
#
# node_modules stays in the checkout (ignored by git), so later runs skip `npm ci`.
set -euo pipefail

SERVICE=tooling
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ASYNCAPI_DIR="$(cd "$SERVICES_SCRIPT_DIR/../.." && pwd)/crates/tidings-cli/tests/asyncapi"

has_parser() {
    [ -f "$ASYNCAPI_DIR/node_modules/@asyncapi/parser/package.json" ]
}

status() {
    command -v dot >/dev/null && command -v node >/dev/null && has_parser
}

install() {
    local start
    start="$(now_s)"
    if ! command -v dot >/dev/null; then
        apt_install graphviz
    fi
    if ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    if ! has_parser; then
        log "npm ci in $ASYNCAPI_DIR (the AsyncAPI parser)"
        (cd "$ASYNCAPI_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
            die "npm ci failed in $ASYNCAPI_DIR"
    fi
    status || die "still missing after install: dot, node or the AsyncAPI parser"
    log "ready in $(elapsed "$start")s: $(dot -V 2>&1), node $(node --version)"
}

case "${1:-}" in
install) install ;;
status) status ;;
*)
    echo "usage: $0 install|status" >&2
    exit 2
    ;;
esac
