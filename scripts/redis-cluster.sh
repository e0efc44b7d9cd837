#!/usr/bin/env bash
# A local Redis Cluster for trying distkitd: 3 primaries + 3 replicas on 127.0.0.1.
#
#   scripts/redis-cluster.sh start  DIR [BASE_PORT|auto]  # default base port 7000
#   scripts/redis-cluster.sh status DIR
#   scripts/redis-cluster.sh stop   DIR
#
# start: nodes listen on BASE_PORT..BASE_PORT+5 (cluster bus: +10000 each; `auto` takes the first
# base from 7000 up, in steps of 10, whose 12 ports are all free), with pidfiles, logs, nodes.conf
# files and AOF data in DIR. It waits until every node says cluster_state:ok and
# `redis-cli --cluster check` agrees, then prints the seed list on stdout (progress goes to stderr):
#
#   build/distkitd --redis "$(scripts/redis-cluster.sh start /tmp/dk-cluster)"
#
# Starting again on a DIR that was stopped restarts the same cluster (same ports, slots and data).
# stop: SIGTERM (then SIGKILL after 10 s) to the pids in DIR's pidfiles only, never by name.
# status: one line per node; exit 0 when all 6 run and the cluster is ok (seeds on stdout).
#
# Environment: REDIS_SERVER / REDIS_CLI override the binaries.
set -euo pipefail

REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
NODES=6
REPLICAS=1
NODE_TIMEOUT_MS=5000
START_TIMEOUT_S=60

log() { printf '[redis-cluster.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() {
  sed -n '4,6p' "$0" | sed 's/^# //' >&2
  exit 2
}

# True if something accepts connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cli() {
  local port=$1
  shift
  "$REDIS_CLI" -h 127.0.0.1 -p "$port" "$@"
}

# PORTS=(the ports of DIR's nodes), from DIR/ports (written by start).
load_ports() {
  [[ -f "$DIR/ports" ]] || die "$DIR has no cluster (no $DIR/ports; run start first)"
  mapfile -t PORTS <"$DIR/ports"
}

# The pid in DIR's pidfile for port $2 if that process is still the redis-server we started
# (a pid can be reused after a crash: check its command line), else nothing.
live_pid() {
  local dir=$1 port=$2 pid
  [[ -f "$dir/redis-$port.pid" ]] || return 0
  pid=$(<"$dir/redis-$port.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server.*:$port\b"; then
    echo "$pid"
  fi
}

# Polls (every 0.2 s, up to $1 seconds) until the command "$2 ..." succeeds.
wait_for() {
  local timeout=$1
  shift
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

all_state_ok() {
  local port
  for port in "${PORTS[@]}"; do
    cli "$port" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

node_up() { [[ -n "$(live_pid "$DIR" "$1")" ]] && cli "$1" PING >/dev/null 2>&1; }

cluster_checked() { cli "${PORTS[0]}" --cluster check "127.0.0.1:${PORTS[0]}" >/dev/null 2>&1; }

# The primaries that serve slots, as distkitd seeds: redis://127.0.0.1:p1,redis://...
seeds() {
  local port
  for port in "${PORTS[@]}"; do
    [[ -n "$(live_pid "$DIR" "$port")" ]] || continue
    cli "$port" CLUSTER NODES 2>/dev/null |
      awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 { split($2, a, "@"); print "redis://" a[1] }' |
      sort -t: -k3 -n | paste -sd, -
    return 0
  done
}

start_node() {
  local port=$1
  "$REDIS_SERVER" \
    --port "$port" \
    --bind 127.0.0.1 \
    --daemonize yes \
    --pidfile "$DIR/redis-$port.pid" \
    --logfile "$DIR/redis-$port.log" \
    --dir "$DIR" \
    --cluster-enabled yes \
    --cluster-config-file "nodes-$port.conf" \
    --cluster-node-timeout "$NODE_TIMEOUT_MS" \
    --cluster-require-full-coverage no \
    --appendonly yes \
    --appenddirname "appendonly-$port" \
    --save '' \
    --dbfilename "dump-$port.rdb" \
    --repl-diskless-sync-delay 0 ||
    die "redis-server on port $port did not start (see $DIR/redis-$port.log)"
}

cmd_start() {
  local base=${BASE:-7000} port i
  mkdir -p "$DIR"
  DIR=$(readlink -f "$DIR")
  local restart=0
  if [[ -f "$DIR/ports" ]]; then
    mapfile -t PORTS <"$DIR/ports"
    restart=1
    [[ -z "${BASE:-}" || "$BASE" == "${PORTS[0]}" ]] ||
      log "note: $DIR already holds a cluster on ${PORTS[0]}..; BASE_PORT $BASE ignored"
    for port in "${PORTS[@]}"; do
      [[ -z "$(live_pid "$DIR" "$port")" ]] || die "node $port is already running (stop first)"
    done
  else
    if [[ "$base" == auto ]]; then
      base=""
      for ((b = 7000; b <= 7990; b += 10)); do
        local free=1
        for ((i = 0; i < NODES; i++)); do
          if port_busy $((b + i)) || port_busy $((b + i + 10000)); then free=0 && break; fi
        done
        if ((free)); then base=$b && break; fi
      done
      [[ -n "$base" ]] || die "no free base port in 7000..7990"
    fi
    if ! [[ "$base" =~ ^[0-9]+$ ]] || ((base < 1024 || base + NODES - 1 > 55535)); then
      die "BASE_PORT must be a number in 1024..$((55535 - NODES + 1)) or auto, not '$base'"
    fi
    PORTS=()
    for ((i = 0; i < NODES; i++)); do PORTS+=($((base + i))); done
  fi
  for port in "${PORTS[@]}"; do
    if port_busy "$port" || port_busy $((port + 10000)); then
      die "port $port or its bus port $((port + 10000)) is in use (try BASE_PORT auto)"
    fi
  done
  printf '%s\n' "${PORTS[@]}" >"$DIR/ports"

  log "starting ${#PORTS[@]} redis-servers on 127.0.0.1:${PORTS[0]}..${PORTS[-1]} in $DIR"
  for port in "${PORTS[@]}"; do start_node "$port"; done
  for port in "${PORTS[@]}"; do
    wait_for 10 node_up "$port" ||
      die "node $port does not answer PING (see $DIR/redis-$port.log)"
  done

  if ((restart)); then
    log "restarting the existing cluster (nodes-*.conf in $DIR)"
  else
    local addrs=()
    for port in "${PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    log "creating the cluster: ${NODES} nodes, ${REPLICAS} replica per primary"
    "$REDIS_CLI" --cluster create "${addrs[@]}" --cluster-replicas "$REPLICAS" --cluster-yes \
      >"$DIR/create.log" 2>&1 || die "redis-cli --cluster create failed (see $DIR/create.log)"
  fi
  wait_for "$START_TIMEOUT_S" all_state_ok ||
    die "cluster_state is not ok on every node after ${START_TIMEOUT_S} s (logs in $DIR)"
  wait_for "$START_TIMEOUT_S" cluster_checked ||
    die "redis-cli --cluster check fails after ${START_TIMEOUT_S} s (logs in $DIR)"
  log "cluster ok; use: distkitd --redis $(seeds)"
  seeds
}

cmd_stop() {
  DIR=$(readlink -f "$DIR")
  load_ports
  local port pid pids=()
  for port in "${PORTS[@]}"; do
    pid=$(live_pid "$DIR" "$port")
    if [[ -n "$pid" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for port in "${PORTS[@]}"; do rm -f "$DIR/redis-$port.pid"; done
  log "stopped ${#pids[@]} node(s); data and nodes.conf stay in $DIR (start again, or rm -r it)"
}

cmd_status() {
  DIR=$(readlink -f "$DIR")
  load_ports
  local port pid running=0 ok=1 role state
  for port in "${PORTS[@]}"; do
    pid=$(live_pid "$DIR" "$port")
    if [[ -z "$pid" ]]; then
      printf '%s\tstopped\n' "$port" >&2
      ok=0
      continue
    fi
    running=$((running + 1))
    role=$(cli "$port" ROLE 2>/dev/null | head -1 || true)
    state=$(cli "$port" CLUSTER INFO 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p' || true)
    printf '%s\tpid %s\t%s\tcluster_state:%s\n' "$port" "$pid" "${role:-?}" "${state:-?}" >&2
    [[ "$state" == ok ]] || ok=0
  done
  if ((running == ${#PORTS[@]} && ok)); then
    seeds
    return 0
  fi
  return 1
}

(($# >= 2)) || usage
COMMAND=$1
DIR=$2
BASE=${3:-}
case "$COMMAND" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
