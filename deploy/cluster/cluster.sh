#!/usr/bin/env bash
# A throw-away three-node RabbitMQ cluster on this machine, with an haproxy TCP front.
#
#   cluster.sh up              start (or complete) the cluster and the front; waits until 3 nodes run
#   cluster.sh down            stop everything this script started and remove the state directory
#   cluster.sh status          nodes, cluster membership, front; exit 0 only when all is healthy
#   cluster.sh leader Q [VH]   the node leading quorum queue Q in vhost VH (default /)
#   cluster.sh members Q [VH]  the online members of quorum queue Q, one per line
#   cluster.sh nodes           the running nodes, as the cluster sees them, one per line
#   cluster.sh kill NODE       SIGKILL a node (rc1, rc1@localhost or 1), by its pid file
#   cluster.sh start NODE      start a stopped/killed node again and wait until it has rejoined
#   cluster.sh ctl NODE ARGS   rabbitmqctl against one node with the cluster's cookie
#   cluster.sh url [NODE]      the front's AMQP URL, or one node's
#
# Nodes rc1..rc3@localhost run as the rabbitmq user from Debian's rabbitmq-server, each with its own
# ports, config, data, log and pid file under CLUSTER_STATE_DIR, and their own Erlang cookie (so they
# can never reach the machine's own broker, rabbit@localhost, which this script never touches).
# They register with the machine's epmd (port 4369) like any node; the registration ends with the node.
# (If no epmd runs, the first node starts one and `down` stops it again.)
#
# Settings (environment):
#   CLUSTER_STATE_DIR        /tmp/welcome-mail-cluster
#   CLUSTER_FRONT_PORT       5680   haproxy, 127.0.0.1, tcp mode, roundrobin
#   CLUSTER_AMQP_BASE_PORT   5681   node i listens on base+i-1 (5681..5683)
#   CLUSTER_DIST_BASE_PORT   25681  Erlang distribution, node i on base+i-1 (25681..25683)
#   CLUSTER_NODE_PREFIX      rc     node names rc1@localhost..rc3@localhost
#   CLUSTER_TIMEOUT          180    seconds any one command may wait before it gives up
# Needs root (it runs the nodes as the rabbitmq user) or the rabbitmq user itself.
set -euo pipefail

STATE_DIR=${CLUSTER_STATE_DIR:-/tmp/welcome-mail-cluster}
FRONT_PORT=${CLUSTER_FRONT_PORT:-5680}
AMQP_BASE_PORT=${CLUSTER_AMQP_BASE_PORT:-5681}
DIST_BASE_PORT=${CLUSTER_DIST_BASE_PORT:-25681}
NODE_PREFIX=${CLUSTER_NODE_PREFIX:-rc}
TIMEOUT=${CLUSTER_TIMEOUT:-180}
NODE_HOST=localhost
NODE_COUNT=3
RABBIT_USER=rabbitmq
HAPROXY_CFG=$STATE_DIR/haproxy.cfg
HAPROXY_PID=$STATE_DIR/haproxy.pid
HAPROXY_SOCK=$STATE_DIR/haproxy.sock

log() { printf '[cluster] %s %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

deadline_from_now() { echo $((SECONDS + ${1:-$TIMEOUT})); }

# ---------------------------------------------------------------------------------------------
# Nodes: index 1..3 <-> name, ports, files

node_short() { echo "${NODE_PREFIX}$1"; }
node_name() { echo "${NODE_PREFIX}$1@${NODE_HOST}"; }
node_dir() { echo "$STATE_DIR/$(node_short "$1")"; }
node_pidfile() { echo "$(node_dir "$1")/rabbitmq.pid"; }
amqp_port() { echo $((AMQP_BASE_PORT + $1 - 1)); }
dist_port() { echo $((DIST_BASE_PORT + $1 - 1)); }

# "rc2", "rc2@localhost" or "2" -> 2
node_index() {
    local arg=${1:?node name expected} i
    for ((i = 1; i <= NODE_COUNT; i++)); do
        if [[ $arg == "$i" || $arg == "$(node_short "$i")" || $arg == "$(node_name "$i")" ]]; then
            echo "$i"
            return 0
        fi
    done
    die "unknown node '$arg' (expected one of: $(all_node_names))"
}

all_node_names() {
    local i names=()
    for ((i = 1; i <= NODE_COUNT; i++)); do names+=("$(node_name "$i")"); done
    echo "${names[*]}"
}

# ---------------------------------------------------------------------------------------------
# Running RabbitMQ's own scripts as the rabbitmq user, with this cluster's cookie and files

RABBIT_BIN_DIR=${RABBITMQ_BIN_DIR:-}

find_rabbit_bin_dir() {
    [[ -n $RABBIT_BIN_DIR ]] && return 0
    local server
    server=$(PATH="$PATH:/usr/sbin:/sbin" command -v rabbitmq-server) ||
        die "rabbitmq-server is not installed: apt-get install -y rabbitmq-server"
    # /usr/sbin/rabbitmq-server is Debian's wrapper (a symlink into /usr/lib/rabbitmq/bin); call the
    # real scripts directly: the wrapper, run as rabbitmq, would send output to /var/log/rabbitmq.
    RABBIT_BIN_DIR=$(dirname "$(readlink -f "$server")")
    [[ -x $RABBIT_BIN_DIR/rabbitmqctl ]] || die "no rabbitmqctl next to $server"
}

as_rabbit() {
    find_rabbit_bin_dir
    if [[ $EUID -eq 0 ]]; then
        (cd "$STATE_DIR" && runuser -u "$RABBIT_USER" -- env HOME="$STATE_DIR" "$@")
    elif [[ $(id -un) == "$RABBIT_USER" ]]; then
        (cd "$STATE_DIR" && env HOME="$STATE_DIR" "$@")
    else
        die "run me as root (or as the $RABBIT_USER user)"
    fi
}

# rabbit_env I TOOL ARGS...: a RabbitMQ script with node I's environment
rabbit_env() {
    local i=$1 tool=$2 dir
    shift 2
    find_rabbit_bin_dir
    dir=$(node_dir "$i")
    as_rabbit env \
        RABBITMQ_CONF_ENV_FILE="$STATE_DIR/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_NODENAME="$(node_name "$i")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$i")" \
        RABBITMQ_DIST_PORT="$(dist_port "$i")" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$(node_pidfile "$i")" \
        "$RABBIT_BIN_DIR/$tool" "$@"
}

# ctl I ARGS...: rabbitmqctl -q against node I
ctl() {
    local i=$1
    shift
    rabbit_env "$i" rabbitmqctl -q -n "$(node_name "$i")" "$@"
}

# ---------------------------------------------------------------------------------------------
# Processes

# pid of node I if it is alive and really is that node's VM (pids get reused), else nothing
node_pid() {
    local pidfile pid
    pidfile=$(node_pidfile "$1")
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc 0-9 <"$pidfile")
    [[ -n $pid ]] && is_our_beam "$pid" "$(node_name "$1")" || return 1
    echo "$pid"
}

# is_our_beam PID [NODENAME]: a beam VM started from this state directory (and for that node)
is_our_beam() {
    local pid=$1 want=${2:-} environ
    [[ -r /proc/$pid/environ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == beam* ]] || return 1
    environ=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ") || return 1
    grep -qxF "RABBITMQ_MNESIA_BASE=$STATE_DIR/${want%%@*}/mnesia" <<<"$environ" && return 0
    [[ -z $want ]] && grep -q "^RABBITMQ_MNESIA_BASE=$STATE_DIR/" <<<"$environ"
}

# every beam VM that was started from this state directory, running or not in our pid files
our_beams() {
    local proc pid
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        is_our_beam "$pid" && echo "$pid"
    done
    return 0
}

# alive and not a zombie (nobody may reap a detached VM's corpse at once)
pid_alive() {
    local stat
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

wait_pid_gone() {
    local pid=$1 deadline=$2
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

epmd_cmd() {
    local epmd
    epmd=$(PATH="$PATH:/usr/lib/erlang/bin" command -v epmd) || return 1
    "$epmd" "$@"
}

epmd_names() { epmd_cmd -names 2>/dev/null || true; }

# The nodes use the machine's epmd (ERL_EPMD_PORT, default 4369). If none runs, the first node starts
# one: remember that, so that `down` can stop it again (epmd -kill refuses while any node is registered).
note_epmd() {
    [[ -e $STATE_DIR/epmd-started-here ]] && return 0
    if ! epmd_cmd -names >/dev/null 2>&1; then
        log "no epmd is running: the first node starts one, and \`down\` stops it"
        touch "$STATE_DIR/epmd-started-here"
    fi
}

stop_our_epmd() {
    [[ -e $STATE_DIR/epmd-started-here ]] || return 0
    local deadline
    deadline=$(deadline_from_now 5)
    while epmd_names | grep -q '^name ' && ((SECONDS < deadline)); do sleep 0.2; done
    if epmd_names | grep -q '^name '; then
        log "leaving epmd running: other nodes are registered"
    else
        log "stopping the epmd the cluster started"
        epmd_cmd -kill >/dev/null 2>&1 || log "epmd -kill failed"
    fi
}

# ---------------------------------------------------------------------------------------------
# Files

write_files() {
    local i dir
    mkdir -p "$STATE_DIR"
    chmod 750 "$STATE_DIR"
    if [[ ! -s $STATE_DIR/.erlang.cookie ]]; then
        # Our own cookie: these nodes must share one, and must not share it with rabbit@localhost.
        od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$STATE_DIR/.erlang.cookie"
        chmod 400 "$STATE_DIR/.erlang.cookie"
    fi
    cat >"$STATE_DIR/rabbitmq-env.conf" <<'EOF'
# written by cluster.sh: replaces /etc/rabbitmq/rabbitmq-env.conf for these nodes
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    for ((i = 1; i <= NODE_COUNT; i++)); do
        dir=$(node_dir "$i")
        mkdir -p "$dir/mnesia" "$dir/log"
        echo '[].' >"$dir/enabled_plugins"
        cat >"$dir/rabbitmq.conf" <<EOF
# written by cluster.sh: replaces /etc/rabbitmq/rabbitmq.conf for $(node_name "$i")
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$i")
cluster_partition_handling = pause_minority
# a blank node joins the seed at its first boot; a node with data rejoins its cluster from disk
cluster_formation.peer_discovery_backend = classic_config
cluster_formation.classic_config.nodes.1 = $(node_name 1)
log.console = false
log.file.level = info
EOF
    done
    write_haproxy_cfg
    if [[ $EUID -eq 0 ]]; then
        chown "$RABBIT_USER:$RABBIT_USER" "$STATE_DIR" "$STATE_DIR/.erlang.cookie" "$STATE_DIR/rabbitmq-env.conf"
        for ((i = 1; i <= NODE_COUNT; i++)); do
            chown -R "$RABBIT_USER:$RABBIT_USER" "$(node_dir "$i")"
        done
    fi
}

write_haproxy_cfg() {
    local i user_lines=""
    if [[ $EUID -eq 0 ]] && id haproxy >/dev/null 2>&1; then
        user_lines=$'    user haproxy\n    group haproxy'
    fi
    {
        cat <<EOF
# written by cluster.sh: TCP front for the local RabbitMQ cluster
global
    maxconn 4096
    stats socket $HAPROXY_SOCK mode 600 level admin
$user_lines

defaults
    mode tcp
    option tcpka
    # a connect failure (node just died, not yet marked down) is retried on another node
    option redispatch 1
    retries 3
    timeout connect 2s
    # AMQP connections are long-lived; heartbeats (60 s by default) keep them under this
    timeout client 3h
    timeout server 3h
    timeout client-fin 10s
    timeout server-fin 10s

frontend amqp
    bind 127.0.0.1:$FRONT_PORT
    default_backend rabbitmq_nodes

backend rabbitmq_nodes
    balance roundrobin
    # plain TCP checks every 500 ms: a dead node leaves rotation after 2 failures (~1 s),
    # returns after 2 successes; connections to a node marked down are closed at once
    default-server inter 500ms fastinter 250ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions
EOF
        for ((i = 1; i <= NODE_COUNT; i++)); do
            echo "    server $(node_short "$i") 127.0.0.1:$(amqp_port "$i") check"
        done
    } >"$HAPROXY_CFG"
}

# ---------------------------------------------------------------------------------------------
# Tools

ensure_haproxy() {
    command -v haproxy >/dev/null 2>&1 && return 0
    PATH="$PATH:/usr/sbin:/sbin" command -v haproxy >/dev/null 2>&1 && { PATH="$PATH:/usr/sbin:/sbin"; return 0; }
    [[ $EUID -eq 0 ]] || die "haproxy is not installed: apt-get install -y haproxy"
    log "haproxy is missing: apt-get install -y haproxy (waits for a running apt)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q haproxy >&2 ||
        die "could not install haproxy: apt-get install -y haproxy"
}

# ---------------------------------------------------------------------------------------------
# Nodes: start, join, stop

start_node() {
    local i=$1 name pidfile
    name=$(node_name "$i")
    pidfile=$(node_pidfile "$i")
    if node_pid "$i" >/dev/null; then
        return 0
    fi
    if epmd_names | grep -q "^name $(node_short "$i") at port"; then
        die "$name is registered with epmd but is not ours (pid file $pidfile): stop it first"
    fi
    check_node_ports "$i"
    rm -f "$pidfile"
    log "starting $name (amqp $(amqp_port "$i"), dist $(dist_port "$i"))"
    # 9<&-: the daemon must not inherit (and hold forever) the lock taken in main
    rabbit_env "$i" rabbitmq-server -detached >/dev/null 2>&1 9<&- ||
        die "rabbitmq-server failed to start $name; see $(node_dir "$i")/log"
}

check_node_ports() {
    local port
    for port in "$(amqp_port "$1")" "$(dist_port "$1")"; do
        port_open "$port" &&
            die "port $port (for $(node_name "$1")) is already in use; set CLUSTER_AMQP_BASE_PORT / CLUSTER_DIST_BASE_PORT"
    done
    return 0
}

# wait_node I DEADLINE: node I's RabbitMQ application has booted
wait_node() {
    local i=$1 deadline=$2 left
    left=$((deadline - SECONDS))
    ((left > 0)) || left=1
    if ! ctl "$i" wait "$(node_pidfile "$i")" --timeout "$left" >/dev/null 2>&1; then
        die "$(node_name "$i") did not start within ${left}s; see $(node_dir "$i")/log/$(node_name "$i").log"
    fi
}

# cluster_field I FIELD: running_nodes / disk_nodes as seen by node I, one per line
cluster_field() {
    local i=$1 field=$2 json
    json=$(ctl "$i" cluster_status --formatter json 2>/dev/null) || return 1
    # {"disk_nodes":["rc1@localhost",...],...,"running_nodes":[...],...}
    grep -o "\"$field\":\[[^]]*\]" <<<"$json" | grep -o '"[^"]*@[^"]*"' | tr -d '"'
}

join_node() {
    local i=$1 seed=$2
    log "joining $(node_name "$i") to $(node_name "$seed")"
    local out
    # start_app logs harmless "tracked connection table" errors while the others catch up: keep quiet
    out=$({ ctl "$i" stop_app && ctl "$i" join_cluster "$(node_name "$seed")" && ctl "$i" start_app; } 2>&1) ||
        die "$(node_name "$i") could not join $(node_name "$seed"): $out"
}

# wait_running COUNT DEADLINE [VIA...]: the cluster reports COUNT running nodes
wait_running() {
    local want=$1 deadline=$2 i n
    shift 2
    local via=("$@")
    while ((SECONDS < deadline)); do
        for i in "${via[@]}"; do
            n=$(cluster_field "$i" running_nodes | wc -l) || n=0
            ((n == want)) && return 0
        done
        sleep 0.5
    done
    return 1
}

stop_node_pids() {
    # SIGTERM is a graceful stop for RabbitMQ; the data is thrown away anyway, so no rabbitmqctl
    local deadline pid pids=("$@")
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$(deadline_from_now 30)
    for pid in "${pids[@]}"; do
        if ! wait_pid_gone "$pid" "$deadline"; then
            log "pid $pid ignored SIGTERM for 30s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_pid_gone "$pid" "$(deadline_from_now 10)" || log "pid $pid survived SIGKILL"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Front

haproxy_pid() {
    local pid
    [[ -r $HAPROXY_PID ]] || return 1
    pid=$(head -n1 "$HAPROXY_PID" | tr -dc 0-9)
    [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == haproxy ]] || return 1
    echo "$pid"
}

start_haproxy() {
    haproxy_pid >/dev/null && return 0
    port_open "$FRONT_PORT" && die "front port $FRONT_PORT is already in use; set CLUSTER_FRONT_PORT"
    haproxy -c -q -f "$HAPROXY_CFG" >&2 || die "haproxy rejected $HAPROXY_CFG"
    rm -f "$HAPROXY_PID" "$HAPROXY_SOCK"
    log "starting haproxy on 127.0.0.1:$FRONT_PORT"
    haproxy -D -f "$HAPROXY_CFG" -p "$HAPROXY_PID" 9<&- || die "haproxy failed to start"
}

# backend servers haproxy considers UP (needs socat for the stats socket; else prints nothing)
haproxy_up_servers() {
    command -v socat >/dev/null 2>&1 || return 0
    [[ -S $HAPROXY_SOCK ]] || return 0
    echo "show stat" | socat - "UNIX-CONNECT:$HAPROXY_SOCK" 2>/dev/null |
        awk -F, '$1 == "rabbitmq_nodes" && $2 != "BACKEND" && $18 ~ /^UP/ { print $2 }'
}

haproxy_has_stats() { command -v socat >/dev/null 2>&1 && [[ -S $HAPROXY_SOCK ]]; }

# amqp_answers PORT: a RabbitMQ answers the AMQP 0-9-1 header with a method frame (type 1)
amqp_answers() {
    local reply
    # shellcheck disable=SC2016 # expanded by the inner bash
    reply=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        head -c 1 <&3 | od -An -tx1' _ "$1" 2>/dev/null) || return 1
    [[ ${reply// /} == 01 ]]
}

wait_front() {
    local deadline=$1 up
    while ((SECONDS < deadline)); do
        if amqp_answers "$FRONT_PORT"; then
            if ! haproxy_has_stats; then return 0; fi
            up=$(haproxy_up_servers | wc -l)
            ((up == NODE_COUNT)) && return 0
        fi
        sleep 0.25
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_up() {
    local deadline i pids=() started=0
    deadline=$(deadline_from_now)
    find_rabbit_bin_dir
    ensure_haproxy
    write_files
    note_epmd
    # every port needed must be free before anything starts
    for ((i = 1; i <= NODE_COUNT; i++)); do
        node_pid "$i" >/dev/null || check_node_ports "$i"
    done
    if ! haproxy_pid >/dev/null && port_open "$FRONT_PORT"; then
        die "front port $FRONT_PORT is already in use; set CLUSTER_FRONT_PORT"
    fi
    # Fresh: rc1 boots alone, then the others boot in parallel and, being blank, join rc1 by
    # themselves (classic_config peer discovery names rc1). Not fresh (nodes killed or stopped):
    # start whatever is missing in parallel, since mnesia makes a restarted node wait for its peers.
    local fresh=0 first=1
    [[ -z $(ls -A "$(node_dir 1)/mnesia") ]] && fresh=1
    if ((fresh)); then
        start_node 1
        wait_node 1 "$deadline"
        started=1
        first=2
    fi
    for ((i = first; i <= NODE_COUNT; i++)); do
        if ! node_pid "$i" >/dev/null; then
            start_node "$i"
            started=1
        fi
    done
    for ((i = first; i <= NODE_COUNT; i++)); do
        wait_node "$i" "$deadline" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "a node failed to boot"; done
    log "nodes booted"
    # fallback: rc2, rc3 join rc1 unless they already belong to its cluster
    local members
    members=$(cluster_field 1 disk_nodes) || die "cannot read the cluster status of $(node_name 1)"
    for ((i = 2; i <= NODE_COUNT; i++)); do
        grep -qxF "$(node_name "$i")" <<<"$members" || join_node "$i" 1
    done
    wait_running "$NODE_COUNT" "$deadline" 1 ||
        die "the cluster did not reach $NODE_COUNT running nodes within ${TIMEOUT}s"
    start_haproxy
    wait_front "$deadline" || die "the front on 127.0.0.1:$FRONT_PORT does not answer with all nodes up"
    if ((started)); then log "up: $(all_node_names) behind amqp://127.0.0.1:$FRONT_PORT/"; fi
    echo "amqp://guest:guest@127.0.0.1:$FRONT_PORT/"
}

cmd_down() {
    local pid pids=()
    if pid=$(haproxy_pid); then
        log "stopping haproxy (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" "$(deadline_from_now 10)" || kill -KILL "$pid" 2>/dev/null || true
    fi
    # everything started from this state dir, whether or not its pid file is still there
    mapfile -t pids < <(our_beams)
    if ((${#pids[@]})); then
        log "stopping ${#pids[@]} node(s): pids ${pids[*]}"
        stop_node_pids "${pids[@]}"
    fi
    # children of a SIGKILLed VM (erl_child_setup, inet_gethost) go with it; check nothing is left
    mapfile -t pids < <(our_beams)
    ((${#pids[@]} == 0)) || die "nodes still running after stop: ${pids[*]}"
    stop_our_epmd
    if [[ -d $STATE_DIR ]]; then
        rm -rf --one-file-system "$STATE_DIR"
    fi
    log "down"
}

cmd_status() {
    local i pid healthy=0 running up
    [[ -d $STATE_DIR ]] || { echo "not up (no $STATE_DIR)"; return 1; }
    for ((i = 1; i <= NODE_COUNT; i++)); do
        if pid=$(node_pid "$i"); then
            printf '%-16s pid %-7s amqp 127.0.0.1:%s\n' "$(node_name "$i")" "$pid" "$(amqp_port "$i")"
        else
            printf '%-16s DOWN\n' "$(node_name "$i")"
            healthy=1
        fi
    done
    running=""
    for ((i = 1; i <= NODE_COUNT; i++)); do
        node_pid "$i" >/dev/null || continue
        running=$(cluster_field "$i" running_nodes) && break
    done
    echo "cluster running nodes: $(echo "$running" | wc -w) ($(echo "$running" | xargs))"
    (($(echo "$running" | wc -w) == NODE_COUNT)) || healthy=1
    if pid=$(haproxy_pid); then
        if haproxy_has_stats; then
            up=$(haproxy_up_servers | xargs)
            echo "front 127.0.0.1:$FRONT_PORT haproxy pid $pid, servers up: ${up:-none}"
            (($(echo "$up" | wc -w) == NODE_COUNT)) || healthy=1
        else
            echo "front 127.0.0.1:$FRONT_PORT haproxy pid $pid"
        fi
        amqp_answers "$FRONT_PORT" || { echo "front does not answer AMQP"; healthy=1; }
    else
        echo "front DOWN"
        healthy=1
    fi
    return "$healthy"
}

# queue_row QUEUE VHOST: "name<TAB>leader<TAB>[online members]" from the first node that answers
queue_row() {
    local queue=$1 vhost=$2 i row
    for ((i = 1; i <= NODE_COUNT; i++)); do
        node_pid "$i" >/dev/null || continue
        row=$(ctl "$i" list_queues -p "$vhost" name leader online --no-table-headers 2>/dev/null |
            awk -F'\t' -v q="$queue" '$1 == q') || continue
        if [[ -n $row ]]; then
            echo "$row"
            return 0
        fi
    done
    return 1
}

cmd_leader() {
    local queue=${1:?usage: cluster.sh leader QUEUE [VHOST]} vhost=${2:-/} leader
    leader=$(queue_row "$queue" "$vhost" | cut -f2) || true
    # classic queues and quorum queues without a quorum show no leader
    [[ $leader == *@* ]] || die "no leader known for queue '$queue' in vhost '$vhost' (no such quorum queue, or no quorum)"
    echo "$leader"
}

cmd_members() {
    local queue=${1:?usage: cluster.sh members QUEUE [VHOST]} vhost=${2:-/} row
    row=$(queue_row "$queue" "$vhost") || die "no queue '$queue' in vhost '$vhost'"
    cut -f3 <<<"$row" | tr -d '[] ' | tr ',' '\n' | grep .
}

cmd_nodes() {
    local i
    for ((i = 1; i <= NODE_COUNT; i++)); do
        node_pid "$i" >/dev/null || continue
        cluster_field "$i" running_nodes | sort && return 0
    done
    die "no node is running"
}

cmd_kill() {
    local i pid
    i=$(node_index "${1:?usage: cluster.sh kill NODE}")
    pid=$(node_pid "$i") || die "$(node_name "$i") is not running"
    log "SIGKILL $(node_name "$i") (pid $pid)"
    kill -KILL "$pid"
    wait_pid_gone "$pid" "$(deadline_from_now 10)" || die "pid $pid survived SIGKILL"
}

cmd_start() {
    local i deadline others=() j
    i=$(node_index "${1:?usage: cluster.sh start NODE}")
    deadline=$(deadline_from_now)
    [[ -d $STATE_DIR ]] || die "the cluster is not up (cluster.sh up)"
    write_files
    note_epmd
    start_node "$i"
    wait_node "$i" "$deadline"
    # it still has its cluster membership on disk: it rejoins by itself; wait until the others see it
    for ((j = 1; j <= NODE_COUNT; j++)); do node_pid "$j" >/dev/null && others+=("$j"); done
    wait_running "${#others[@]}" "$deadline" "$i" ||
        die "$(node_name "$i") did not rejoin within ${TIMEOUT}s"
    cluster_field "$i" running_nodes | grep -qxF "$(node_name "$i")" ||
        die "$(node_name "$i") is not among the running nodes"
    if haproxy_pid >/dev/null && haproxy_has_stats; then
        until haproxy_up_servers | grep -qxF "$(node_short "$i")"; do
            ((SECONDS < deadline)) || die "haproxy did not put $(node_name "$i") back in rotation"
            sleep 0.1
        done
    fi
    log "$(node_name "$i") is back: $(cluster_field "$i" running_nodes | xargs)"
}

cmd_ctl() {
    local i
    i=$(node_index "${1:?usage: cluster.sh ctl NODE ARGS...}")
    shift
    rabbit_env "$i" rabbitmqctl -n "$(node_name "$i")" "$@"
}

cmd_url() {
    if (($#)); then
        echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$(node_index "$1")")/"
    else
        echo "amqp://guest:guest@127.0.0.1:$FRONT_PORT/"
    fi
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

require_user() {
    [[ $EUID -eq 0 || $(id -un) == "$RABBIT_USER" ]] ||
        die "run me as root (the nodes and rabbitmqctl run as the $RABBIT_USER user, via runuser)"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        url | help | -h | --help | "") ;;
        *) require_user ;;
    esac
    case $cmd in
        up | down | start | kill)
            # one changing command at a time (lock the script itself: nothing is left behind)
            exec 9<"$0"
            flock -w "$TIMEOUT" 9 || die "another cluster.sh is still running"
            ;;
    esac
    case $cmd in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        leader) cmd_leader "$@" ;;
        members) cmd_members "$@" ;;
        nodes) cmd_nodes "$@" ;;
        kill) cmd_kill "$@" ;;
        start) cmd_start "$@" ;;
        ctl) cmd_ctl "$@" ;;
        url) cmd_url "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
