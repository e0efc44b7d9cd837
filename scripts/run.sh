#!/usr/bin/env bash
# Build distkitd + distkit and run the daemon in the foreground.
#
#   scripts/run.sh [--cluster] [distkitd flags...]
#
# Without --redis / --redis=... and without DISTKIT_REDIS, a private redis-server is started on a
# Unix socket in ./run/ (AOF persistence in ./run/, no TCP port) and the daemon is pointed at it.
# With --cluster, a private local Redis Cluster (3 primaries + 3 replicas on 127.0.0.1, free ports
# from 7000 up, data in ./run/cluster/; scripts/redis-cluster.sh) instead; it is stopped on exit.
# The daemon keeps its default --listen (unix:/tmp/distkitd.sock), so `build/distkit health`
# works without flags. Ctrl-C (or SIGTERM) stops the daemon first (SIGTERM: it flushes its lax
# deltas), then the private Redis. A second Ctrl-C kills the daemon.
#
# Environment: NO_BUILD=1 skips installing packages and building; REDIS_SERVER / REDIS_CLI override the binaries.
# shellcheck disable=SC2317  # cleanup/on_signal run from traps
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
ROOT=$PWD

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- build ----
if [[ "${NO_BUILD:-0}" != 1 ]]; then
  scripts/install-deps.sh >&2  # a no-op (0.3 s) once everything is installed
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build build -j2 --target distkitd distkit
fi
DAEMON="$ROOT/build/distkitd"
[[ -x "$DAEMON" ]] || die "$DAEMON is missing (build failed or NO_BUILD=1 without a build)"

# ---- what did the caller give us? ----
have_redis=0
want_cluster=0
listen="${DISTKIT_LISTEN:-unix:/tmp/distkitd.sock}"
next_is_listen=0
daemon_args=()
for arg in "$@"; do
  if [[ "$arg" == --cluster ]]; then want_cluster=1; continue; fi
  daemon_args+=("$arg")
  if ((next_is_listen)); then listen=$arg; next_is_listen=0; continue; fi
  case "$arg" in
    --redis | --redis=*) have_redis=1 ;;
    --listen) next_is_listen=1 ;;
    --listen=*) listen=${arg#--listen=} ;;
  esac
done
[[ -n "${DISTKIT_REDIS:-}" ]] && have_redis=1
((want_cluster && have_redis)) && die "--cluster starts its own cluster: do not also give --redis"
set -- "${daemon_args[@]+"${daemon_args[@]}"}"

REDIS_PID=""
DAEMON_PID=""
CLUSTER_DIR=""
RUN_DIR="$ROOT/run"
REDIS_SOCK="$RUN_DIR/redis.sock"

# Waits up to $2 seconds for process $1 to exit; returns 1 if it is still running.
wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

stop_redis() {
  if [[ -n "$CLUSTER_DIR" ]]; then
    log "stopping the private Redis Cluster in $CLUSTER_DIR"
    scripts/redis-cluster.sh stop "$CLUSTER_DIR" || true
    CLUSTER_DIR=""
  fi
  [[ -n "$REDIS_PID" ]] || return 0
  if kill -0 "$REDIS_PID" 2>/dev/null; then
    log "stopping private redis-server (pid $REDIS_PID)"
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    if ! wait_gone "$REDIS_PID" 15; then
      log "redis-server did not stop within 15 s: killing it"
      kill -KILL "$REDIS_PID" 2>/dev/null || true
    fi
  fi
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}

cleanup() {
  if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait_gone "$DAEMON_PID" 30 || kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  stop_redis
}
trap cleanup EXIT

# ---- private redis ----
redis_args=()
if ((want_cluster)); then
  mkdir -p "$RUN_DIR/cluster"
  CLUSTER_DIR="$RUN_DIR/cluster"
  seeds=$(scripts/redis-cluster.sh start "$CLUSTER_DIR" auto) || die "the local Redis Cluster did not start"
  log "private Redis Cluster: seeds $seeds, data + logs in $CLUSTER_DIR/"
  redis_args=(--redis "$seeds")
elif ((!have_redis)); then
  REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
  REDIS_CLI=${REDIS_CLI:-$(command -v redis-cli || true)}
  [[ -n "$REDIS_SERVER" ]] || die "no redis-server: run scripts/install-deps.sh or pass --redis"
  [[ -n "$REDIS_CLI" ]] || die "no redis-cli: run scripts/install-deps.sh or pass --redis"
  mkdir -p "$RUN_DIR"
  if [[ -S "$REDIS_SOCK" ]]; then
    if "$REDIS_CLI" -s "$REDIS_SOCK" ping >/dev/null 2>&1; then
      die "a Redis is already serving $REDIS_SOCK (another scripts/run.sh?); stop it first"
    fi
    rm -f "$REDIS_SOCK"  # stale socket of a killed run
  fi
  # setsid: a Ctrl-C in the terminal reaches only this script, which stops the daemon before
  # Redis, so the daemon's final flush still finds Redis up.
  setsid "$REDIS_SERVER" --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 \
    --dir "$RUN_DIR" --appendonly yes --save "" --logfile "$RUN_DIR/redis.log" &
  REDIS_PID=$!
  deadline=$((SECONDS + 10))
  until "$REDIS_CLI" -s "$REDIS_SOCK" ping 2>/dev/null | grep -q PONG; do
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited at start; see $RUN_DIR/redis.log"
    ((SECONDS < deadline)) || die "redis-server: no PONG within 10 s; see $RUN_DIR/redis.log"
    sleep 0.05
  done
  log "private redis-server: pid $REDIS_PID, socket $REDIS_SOCK, data + log in $RUN_DIR/"
  log "  inspect it with: redis-cli -s $REDIS_SOCK"
  redis_args=(--redis "unix:$REDIS_SOCK")
else
  log "using the Redis given by --redis / DISTKIT_REDIS"
fi

# ---- daemon ----
log "starting $DAEMON ${redis_args[*]} $*"
log "gRPC on $listen; probe it with: $ROOT/build/distkit --addr $listen health"
setsid "$DAEMON" "${redis_args[@]}" "$@" &
DAEMON_PID=$!

signals=0
on_signal() {
  signals=$((signals + 1))
  [[ -n "$DAEMON_PID" ]] || return 0
  if ((signals == 1)); then
    log "stopping distkitd (pid $DAEMON_PID) with SIGTERM; Ctrl-C again to kill it"
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
  else
    log "killing distkitd (pid $DAEMON_PID)"
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
}
trap on_signal INT TERM HUP

# `wait` returns early when a trapped signal arrives; keep waiting until the daemon is gone.
rc=0
while :; do
  set +e
  wait "$DAEMON_PID"
  rc=$?
  set -e
  kill -0 "$DAEMON_PID" 2>/dev/null || break
done
DAEMON_PID=""
log "distkitd exited with status $rc"
trap - INT TERM HUP
stop_redis
exit "$rc"
