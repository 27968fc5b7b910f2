#!/usr/bin/env bash
# What the CLI and dashboard tests use besides cargo: Graphviz's `dot` renders
# `tidings graph --format dot` (crates/tidings-cli/tests), the official AsyncAPI parser
# (@asyncapi/parser from npm, run with the machine's Node.js) checks `tidings asyncapi`,
# and Debian's Chromium driven by playwright-core (from npm, no browser download) tests the
# dashboard in a real browser (crates/tidings-dashboard/tests/browser.rs).
#
#   scripts/services/tooling.sh install   install what is missing: Debian graphviz when
#                                         `dot` is absent, Debian chromium when
#                                         /usr/bin/chromium is, Debian nodejs and npm
#                                         when `npm` is, then `npm ci` in
#                                         crates/tidings-cli/tests/asyncapi and
#                                         crates/tidings-dashboard/tests/browser when
#                                         their node_modules are missing
#   scripts/services/tooling.sh status    exit 0 when all of it is there
#
# node_modules stays in the checkout (ignored by git), so later runs skip `npm ci`.
set -euo pipefail

SERVICE=tooling
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT_DIR="$(cd "$SERVICES_SCRIPT_DIR/../.." && pwd)"
ASYNCAPI_DIR="$ROOT_DIR/crates/tidings-cli/tests/asyncapi"
BROWSER_DIR="$ROOT_DIR/crates/tidings-dashboard/tests/browser"
CHROMIUM=/usr/bin/chromium

has_parser() {
    [ -f "$ASYNCAPI_DIR/node_modules/@asyncapi/parser/package.json" ]
}

has_playwright() {
    [ -f "$BROWSER_DIR/node_modules/playwright-core/package.json" ]
}

status() {
    command -v dot >/dev/null && command -v node >/dev/null && [ -x "$CHROMIUM" ] &&
        has_parser && has_playwright
}

npm_ci() {
    log "npm ci in $1 ($2)"
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci failed in $1"
}

install() {
    local start
    start="$(now_s)"
    local packages=()
    command -v dot >/dev/null || packages+=(graphviz)
    [ -x "$CHROMIUM" ] || packages+=(chromium)
    if [ "${#packages[@]}" -gt 0 ]; then
        apt_install "${packages[@]}"
    fi
    if ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    has_parser || npm_ci "$ASYNCAPI_DIR" "the AsyncAPI parser"
    has_playwright || npm_ci "$BROWSER_DIR" "playwright-core"
    status || die "still missing after install: dot, node, chromium, the AsyncAPI parser or playwright-core"
    log "ready in $(elapsed "$start")s: $(dot -V 2>&1), node $(node --version), $("$CHROMIUM" --version 2>/dev/null)"
}

case "${1:-}" in
install) install ;;
status) status ;;
*)
    echo "usage: $0 install|status" >&2
    exit 2
    ;;
esac
