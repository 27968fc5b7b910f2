#!/usr/bin/env bash
# RabbitMQ for the tests: a private node on loopback, no systemd needed.
#
#   scripts/services/rabbitmq.sh start     install rabbitmq-server if missing, start an empty
#                                          node (data of an earlier run removed), wait ready
#   scripts/services/rabbitmq.sh stop      stop the node (no-op when it is not running)
#   scripts/services/rabbitmq.sh restart   stop the node and start it again (a real broker
#                                          restart: every connection drops), wait ready
#   scripts/services/rabbitmq.sh status    exit 0 when the node answers, 1 otherwise
#   scripts/services/rabbitmq.sh env       print `export TIDINGS_RABBITMQ_*=...` lines
#   scripts/services/rabbitmq.sh ctl ARGS  run rabbitmqctl ARGS against this node
#
# Listeners: AMQP on 127.0.0.1:5672, AMQPS on 127.0.0.1:5671 with the certificates
# from $TIDINGS_TLS_DIR (server cert for localhost/127.0.0.1, client certificates
# verified when presented: verify_peer with fail_if_no_peer_cert = false, so both
# mutual TLS and plain-password TLS work). Erlang distribution and epmd are bound to
# loopback too. The default `guest` user works from loopback only, which is all the
# tests need. State, logs and config live in $TIDINGS_SERVICES_DIR/rabbitmq.
set -euo pipefail

SERVICE=rabbitmq
# shellcheck source=scripts/services/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RMQ_DIR="$TIDINGS_SERVICES_DIR/rabbitmq"
RMQ_PORT="${TIDINGS_RABBITMQ_PORT:-5672}"
RMQ_TLS_PORT="${TIDINGS_RABBITMQ_TLS_PORT:-5671}"
RMQ_DIST_PORT="${TIDINGS_RABBITMQ_DIST_PORT:-25672}"
RMQ_NODE="rabbit@localhost"
RMQ_BIN=/usr/lib/rabbitmq/bin
START_TIMEOUT="${TIDINGS_RABBITMQ_START_TIMEOUT:-180}"

# The environment every rabbitmq process of this node (server and CLI) runs with.
rmq_env() {
    env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        HOME="$RMQ_DIR/home" \
        RABBITMQ_NODENAME="$RMQ_NODE" \
        RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" \
        RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
        RABBITMQ_PID_FILE="$RMQ_DIR/rabbit.pid" \
        RABBITMQ_DIST_PORT="$RMQ_DIST_PORT" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$@"
}

# ctl ARGS...: rabbitmqctl as the rabbitmq user against this node.
ctl() {
    rmq_env runuser -u rabbitmq -- "$RMQ_BIN/rabbitmqctl" "$@"
}

install() {
    if [ -x "$RMQ_BIN/rabbitmq-server" ] && [ -x "$RMQ_BIN/rabbitmqctl" ]; then
        return 0
    fi
    apt_install rabbitmq-server
    # Without a policy-rc.d the package starts its own node (default config, all
    # interfaces); stop it so ours can take the ports.
    if command -v invoke-rc.d >/dev/null && [ -x /etc/init.d/rabbitmq-server ]; then
        invoke-rc.d rabbitmq-server stop >/dev/null 2>&1 || true
    fi
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server installed but $RMQ_BIN/rabbitmq-server is missing"
}

configure() {
    ensure_tls
    ensure_dir "$RMQ_DIR" rabbitmq:rabbitmq
    local d
    for d in home mnesia log; do
        mkdir -p "$RMQ_DIR/$d"
    done
    chown -R rabbitmq:rabbitmq "$RMQ_DIR"
    chmod 700 "$RMQ_DIR/home"
    # The TLS dir must be traversable by the broker user.
    chmod 755 "$TIDINGS_TLS_DIR"
    cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# Written by scripts/services/rabbitmq.sh; rewritten on every start.
listeners.tcp.1 = 127.0.0.1:$RMQ_PORT
listeners.ssl.1 = 127.0.0.1:$RMQ_TLS_PORT
ssl_options.cacertfile = $TIDINGS_TLS_DIR/ca.pem
ssl_options.certfile = $TIDINGS_TLS_DIR/server.pem
ssl_options.keyfile = $TIDINGS_TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
loopback_users.guest = true
# Test machines have little free disk at times; do not block publishers for it.
disk_free_limit.absolute = 50MB
log.file.level = info
log.console = false
EOF
    : >"$RMQ_DIR/rabbitmq-env.conf"
    echo '[].' >"$RMQ_DIR/enabled_plugins"
    echo '[].' >"$RMQ_DIR/advanced.config"
    chown rabbitmq:rabbitmq "$RMQ_DIR/rabbitmq.conf" "$RMQ_DIR/rabbitmq-env.conf" \
        "$RMQ_DIR/enabled_plugins" "$RMQ_DIR/advanced.config"
}

# Every rabbitmqctl call is bounded by coreutils' timeout: rabbitmqctl's own --timeout
# is not always kept (a boot stuck on Mnesia was seen to hang `ping`, `wait` and `stop`
# for good, and a hung `stop` hung the CI run that called it).
is_running() {
    rmq_env timeout -k 5 30 runuser -u rabbitmq -- "$RMQ_BIN/rabbitmqctl" ping >/dev/null 2>&1
}

# kill_node: SIGKILL what is left of the node (pid file) and forget its pid.
kill_node() {
    if [ -s "$RMQ_DIR/rabbit.pid" ]; then
        kill -9 "$(cat "$RMQ_DIR/rabbit.pid")" 2>/dev/null || true
        rm -f "$RMQ_DIR/rabbit.pid"
    fi
}

# Lines that explain a failed start.
show_log_tail() {
    local f
    for f in "$RMQ_DIR/server.out" "$RMQ_DIR/log/$RMQ_NODE.log"; do
        if [ -s "$f" ]; then
            echo "----- last lines of $f -----" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

# start [fresh]: start the node and wait until it serves. With `fresh`, the node's
# data (queues, exchanges, messages) from an earlier run is removed first: every test
# run leaves queues behind, and a node recovering thousands of them boots slowly.
# `restart` keeps the data, since the recovery tests need their queues back.
start() {
    as_root
    local t0
    t0="$(now_s)"
    install
    if is_running; then
        log "already running ($RMQ_NODE, amqp://127.0.0.1:$RMQ_PORT, amqps://localhost:$RMQ_TLS_PORT)"
        return 0
    fi
    local p
    for p in "$RMQ_PORT" "$RMQ_TLS_PORT" "$RMQ_DIST_PORT"; do
        if port_open 127.0.0.1 "$p"; then
            die "port $p is taken by another process (not this node); stop it first: $(ss -ltnpH "sport = :$p" 2>/dev/null | head -n 1)"
        fi
    done
    if [ "${1:-}" = fresh ]; then
        rm -rf "$RMQ_DIR/mnesia"
    fi
    configure
    log "starting $RMQ_NODE (log: $RMQ_DIR/log/$RMQ_NODE.log)"
    rm -f "$RMQ_DIR/rabbit.pid"
    # runuser's PAM session sets the soft open-files limit to 1024, and a node with
    # fewer file handles than queues never finishes recovering them: raise it to the
    # hard limit, as the packaged systemd unit does with LimitNOFILE.
    (
        cd "$RMQ_DIR"
        # shellcheck disable=SC2016  # expanded by the inner shell
        rmq_env setsid runuser -u rabbitmq -- sh -c 'ulimit -n "$(ulimit -Hn)" && exec "$0"' \
            "$RMQ_BIN/rabbitmq-server" </dev/null >"$RMQ_DIR/server.out" 2>&1 8>&- &
    )
    # Wait for the pid file, then for the node to have booted (bounded).
    local i=0
    while [ ! -s "$RMQ_DIR/rabbit.pid" ]; do
        i=$((i + 1))
        if [ "$i" -gt $((START_TIMEOUT * 5)) ]; then
            show_log_tail
            die "no pid file after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    if ! rmq_env timeout -k 5 "$((START_TIMEOUT + 5))" runuser -u rabbitmq -- "$RMQ_BIN/rabbitmqctl" wait --timeout "$START_TIMEOUT" "$RMQ_DIR/rabbit.pid" >"$RMQ_DIR/wait.out" 2>&1; then
        cat "$RMQ_DIR/wait.out" >&2
        show_log_tail
        die "node did not boot within ${START_TIMEOUT}s"
    fi
    if ! rmq_env timeout -k 5 "$((START_TIMEOUT + 5))" runuser -u rabbitmq -- "$RMQ_BIN/rabbitmqctl" await_startup --timeout "$START_TIMEOUT" >/dev/null 2>&1; then
        show_log_tail
        die "node did not finish booting within ${START_TIMEOUT}s"
    fi
    if ! wait_port 127.0.0.1 "$RMQ_PORT" 30 || ! wait_port 127.0.0.1 "$RMQ_TLS_PORT" 30; then
        show_log_tail
        die "node runs but does not listen on 127.0.0.1:$RMQ_PORT and :$RMQ_TLS_PORT"
    fi
    log "ready in $(elapsed "$t0")s: amqp://127.0.0.1:$RMQ_PORT, amqps://localhost:$RMQ_TLS_PORT"
}

# stop: a clean stop, or SIGKILL when the node does not go (a node that does not answer
# `ping` but whose process lives is stopped too, so it cannot hold the ports).
stop() {
    local pid=""
    [ -s "$RMQ_DIR/rabbit.pid" ] && pid="$(cat "$RMQ_DIR/rabbit.pid")"
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        pid=""
    fi
    if [ -z "$pid" ] && ! is_running; then
        log "not running"
        return 0
    fi
    local t0
    t0="$(now_s)"
    log "stopping $RMQ_NODE"
    # `stop PIDFILE` returns once the Erlang VM has exited.
    rmq_env timeout -k 5 60 runuser -u rabbitmq -- "$RMQ_BIN/rabbitmqctl" stop \
        ${pid:+"$RMQ_DIR/rabbit.pid"} >/dev/null 2>&1 || true
    local i=0
    while { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || { [ -z "$pid" ] && is_running; }; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then
            log "the node did not stop within 80s; killing it"
            kill_node
            break
        fi
        sleep 0.2
    done
    log "stopped in $(elapsed "$t0")s"
}

# start, and once more if the boot got stuck: kill what is left of the node first.
# A node that fails to boot twice is killed too, so no half-started node is left behind
# for a later `stop` to wait on.
start_or_retry() {
    if (start "$@"); then
        return 0
    fi
    log "the node did not boot; killing it and starting it once more"
    kill_node
    sleep 1
    if (start "$@"); then
        return 0
    fi
    kill_node
    return 1
}

print_vars() {
    print_env \
        TIDINGS_RABBITMQ_URL "amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2f" \
        TIDINGS_RABBITMQ_TLS_URL "amqps://guest:guest@localhost:$RMQ_TLS_PORT/%2f" \
        TIDINGS_TLS_DIR "$TIDINGS_TLS_DIR" \
        TIDINGS_RABBITMQ_CTL "$SERVICES_SCRIPT_DIR/rabbitmq.sh"
}

case "${1:-}" in
start | stop | restart) lock_service ;;
esac
case "${1:-}" in
start) start_or_retry fresh ;;
stop) stop ;;
restart)
    t0="$(now_s)"
    stop
    start_or_retry
    log "restarted in $(elapsed "$t0")s"
    ;;
status)
    if is_running; then
        log "running ($RMQ_NODE)"
    else
        log "not running"
        exit 1
    fi
    ;;
env) print_vars ;;
ctl)
    shift
    ctl "$@"
    ;;
*)
    echo "usage: $0 {start|stop|restart|status|env|ctl ARGS...}" >&2
    exit 2
    ;;
esac
