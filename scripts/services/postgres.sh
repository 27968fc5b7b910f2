#!/usr/bin/env bash
# PostgreSQL for the tests: a private cluster on loopback, no systemd needed.
#
#   scripts/services/postgres.sh start     install postgresql if missing, initdb once, start,
#                                          create role/database `tidings`, wait ready
#   scripts/services/postgres.sh stop      stop the server (fast shutdown)
#   scripts/services/postgres.sh restart   stop and start again
#   scripts/services/postgres.sh status    exit 0 when the server accepts connections
#   scripts/services/postgres.sh env       print `export TIDINGS_POSTGRES_URL=...`
#   scripts/services/postgres.sh psql ARGS psql as the superuser over the private socket
#
# Listens on 127.0.0.1:5432, or on the first free port of 5433-5442 when 5432 is
# taken by a server that is not this one (`env` prints the port in use). The role
# `tidings` (password `tidings`, may create databases) owns the database `tidings`.
# The cluster lives in $TIDINGS_SERVICES_DIR/postgres and is kept between runs.
set -euo pipefail

SERVICE=postgres
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_DIR="$TIDINGS_SERVICES_DIR/postgres"
PG_DATA="$PG_DIR/data"
PG_PREFERRED_PORT="${TIDINGS_POSTGRES_PORT:-5432}"
START_TIMEOUT="${TIDINGS_POSTGRES_START_TIMEOUT:-120}"

# The newest installed server's bin dir, or nothing.
pg_bin() {
    local d
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
    fi
}

as_pg() {
    (cd / && runuser -u postgres -- "$@")
}

install() {
    if [ -n "$(pg_bin)" ]; then
        return 0
    fi
    apt_install postgresql
    # Without a policy-rc.d the package starts its default cluster on 5432; stop it
    # so the private one can take the port.
    if command -v invoke-rc.d >/dev/null && [ -x /etc/init.d/postgresql ]; then
        invoke-rc.d postgresql stop >/dev/null 2>&1 || true
    fi
    [ -n "$(pg_bin)" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
}

# The port our running server listens on (from postmaster.pid), or nothing.
running_port() {
    local bin
    bin="$(pg_bin)"
    [ -n "$bin" ] && [ -s "$PG_DATA/postmaster.pid" ] || return 0
    if as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        sed -n 4p "$PG_DATA/postmaster.pid"
    fi
}

is_ready() {
    local port
    port="$(running_port)"
    [ -n "$port" ] && "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5
}

pick_port() {
    local p
    for p in "$PG_PREFERRED_PORT" $(seq 5433 5442); do
        if ! port_open 127.0.0.1 "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "ports $PG_PREFERRED_PORT and 5433-5442 are all taken"
}

psql_super() {
    local port
    port="$(running_port)"
    [ -n "$port" ] || die "not running"
    as_pg "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$port" -U postgres "$@"
}

start() {
    as_root
    local t0 bin
    t0="$(now_s)"
    install
    bin="$(pg_bin)"
    if is_ready; then
        log "already running on 127.0.0.1:$(running_port)"
        return 0
    fi
    ensure_dir "$TIDINGS_SERVICES_DIR"
    ensure_dir "$PG_DIR" postgres:postgres
    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        log "initdb $PG_DATA ($("$bin/postgres" --version))"
        rm -rf "$PG_DATA"
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
            { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    elif [ "$(cat "$PG_DATA/PG_VERSION")" != "$(basename "$(dirname "$bin")")" ]; then
        die "$PG_DATA was made by PostgreSQL $(cat "$PG_DATA/PG_VERSION"), the server is $(basename "$(dirname "$bin")"); remove $PG_DATA to recreate it"
    fi
    local port
    port="$(pick_port)"
    if [ "$port" != "$PG_PREFERRED_PORT" ]; then
        log "port $PG_PREFERRED_PORT is taken by another server; using $port"
    fi
    log "starting on 127.0.0.1:$port (log: $PG_DIR/server.log)"
    if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/server.log" -w -t "$START_TIMEOUT" \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300" \
        start >"$PG_DIR/pg_ctl.out" 2>&1 </dev/null 8>&-; then
        cat "$PG_DIR/pg_ctl.out" >&2
        tail -n 40 "$PG_DIR/server.log" >&2 || true
        die "server did not start"
    fi
    local i=0
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5; do
        i=$((i + 1))
        if [ "$i" -gt "$START_TIMEOUT" ]; then
            tail -n 40 "$PG_DIR/server.log" >&2 || true
            die "pg_isready still fails after ${START_TIMEOUT}s"
        fi
        sleep 1
    done
    psql_super -d postgres <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tidings') THEN
        CREATE ROLE tidings;
    END IF;
END
$$;
ALTER ROLE tidings WITH LOGIN CREATEDB PASSWORD 'tidings';
SELECT 'CREATE DATABASE tidings OWNER tidings'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tidings')\gexec
SQL
    log "ready in $(elapsed "$t0")s: postgres://tidings:***@127.0.0.1:$port/tidings"
}

stop() {
    local bin
    bin="$(pg_bin)"
    if [ -z "$(running_port)" ]; then
        log "not running"
        return 0
    fi
    local t0
    t0="$(now_s)"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
        die "server did not stop within 60s"
    log "stopped in $(elapsed "$t0")s"
}

case "${1:-}" in
start | stop | restart) lock_service ;;
esac
case "${1:-}" in
start) start ;;
stop) stop ;;
restart)
    stop
    start
    ;;
status)
    if is_ready; then
        log "running on 127.0.0.1:$(running_port)"
    else
        log "not running"
        exit 1
    fi
    ;;
env)
    port="$(running_port)"
    if [ -z "$port" ]; then
        port="$PG_PREFERRED_PORT"
        log "not running; printing the default port"
    fi
    print_env TIDINGS_POSTGRES_URL "postgres://tidings:tidings@127.0.0.1:$port/tidings"
    ;;
psql)
    shift
    psql_super "$@"
    ;;
*)
    echo "usage: $0 {start|stop|restart|status|env|psql ARGS...}" >&2
    exit 2
    ;;
esac
