#!/usr/bin/env bash
# Builds the unmodified Dockerfile and runs the image and docker-compose.yml on a Debian 12 box
# with no image registry (only the Debian mirror): podman 4.3 rootful (Debian's podman/buildah),
# overlay storage, netavark bridge networks, runc (not crun), two ulimits lowered; everything in
# $CONTAINERS_CONF, no other host config changed. Base images (debian:12, debian:12-slim, a
# redis:7 stand-in with Debian's redis-server) are made locally with debootstrap. Run as root.
# A change to Dockerfile, docker-compose.yml or deploy/ lands only after `all` passes.
#
#   scripts/image-test.sh engine   # step 1: apt-get install podman buildah podman-compose ...
#   scripts/image-test.sh bases    # step 2: debian:12, debian:12-slim, redis:7 made locally
#   scripts/image-test.sh build    # step 3: podman build -t distkitd:test . (unmodified Dockerfile)
#   scripts/image-test.sh run      # step 4: redis + distkitd + CLI containers, socket, SIGTERM
#   scripts/image-test.sh compose  # step 5: podman-compose up --build / run --rm cli / stop / down
#   scripts/image-test.sh clean    # remove the containers/volume/network made by `run`
#   scripts/image-test.sh all      # engine bases build run compose (~12 min on 2 cores)
#
# Exit status: 0 when every PASS/FAIL check passed (each printed), 1 otherwise.
# SRC (default: the checkout this script is in) is the tree to build; WORK (default
# /tmp/distkit-image-test) is the scratch dir. MIRROR defaults to the Debian mirror this
# machine's apt already uses.
set -euo pipefail
SRC=${SRC:-$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)}
WORK=${WORK:-/tmp/distkit-image-test}
MIRROR=${MIRROR:-$(grep -h -m1 -oE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | sed 's/^URIs: *//')}
MIRROR=${MIRROR:-$(grep -h -m1 -oE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')}
[[ -n "$MIRROR" ]] || { echo "image-test: set MIRROR to a Debian mirror URL" >&2; exit 2; }
SUITE=bookworm
ts() { date '+%H:%M:%S'; }
# podman config for this sandbox (used by every podman/podman-compose call below)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$WORK/containers.conf}
write_containers_conf() {
  mkdir -p "$(dirname "$CONTAINERS_CONF")"
  cat >"$CONTAINERS_CONF" <<EOF
[containers]
# No CAP_SYS_RESOURCE here and podman's own process gets nproc 32768: podman's rootful defaults
# (nofile 1048576, nproc 4194304) make runc fail with "error setting rlimit type 6/7: EPERM".
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
# crun 1.8 refuses this cgroup-v1 host ("cgroups in hybrid mode not supported": hugetlb sits on
# the cgroup2 mount /sys/fs/cgroup/unified); runc 1.1 copes.
runtime = "runc"
EOF
}

step_engine() {
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah podman-compose runc \
    debootstrap golang-github-containernetworking-plugin-dnsname
  write_containers_conf
  podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}'
}

# The official debian images are debuerreotype builds: minbase + these apt/dpkg tweaks, empty apt
# lists, deb822 sources with bookworm, bookworm-updates and bookworm-security, CMD ["bash"].
# (The official debian:12 has NO ca-certificates; the mirror is plain http.)
official_tweaks() {
  local r=$1
  rm -f "$r/etc/apt/sources.list"
  # The same apt sources as this (Debian 12) host: the image can only reach this host's mirror.
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    cp /etc/apt/sources.list.d/*.sources "$r/etc/apt/sources.list.d/"
  else
    cp /etc/apt/sources.list "$r/etc/apt/sources.list"
  fi
  cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$r/etc/apt/apt.conf.d/docker-autoremove-suggests"
  echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"; chmod 0755 "$r/usr/sbin/policy-rc.d"
}
finish_rootfs() {  # point-release updates, then empty caches/lists like the official image
  local r=$1
  cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  chroot "$r" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -y -q dist-upgrade && apt-get clean'
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/log/apt/* "$r"/tmp/* "$r"/var/tmp/*
  : >"$r/etc/resolv.conf"; printf '127.0.0.1 localhost\n' >"$r/etc/hosts"; : >"$r/etc/machine-id"
  rm -f "$r/etc/hostname"
}
import_rootfs() {  # import_rootfs DIR NAME:TAG
  local r=$1 name=$2
  tar --numeric-owner --xattrs -C "$r" -c . |
    podman import --change 'CMD ["bash"]' - "docker.io/library/$name" >/dev/null
  # full names only: a short name would resolve to whichever of localhost/ docker.io/ exists
  podman tag "docker.io/library/$name" "localhost/$name"
}

step_bases() {
  mkdir -p "$WORK"
  # debian:12 -----------------------------------------------------------------------------
  if [[ ! -f "$WORK/rootfs.debootstrapped" ]]; then   # ~1 min
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR"
    touch "$WORK/rootfs.debootstrapped"
  fi
  official_tweaks "$WORK/rootfs"
  finish_rootfs "$WORK/rootfs"
  # debian:12-slim = the same, with the slim dpkg excludes applied (and their files removed) ---
  rm -rf "$WORK/rootfs-slim"; cp -a "$WORK/rootfs" "$WORK/rootfs-slim"
  cat >"$WORK/rootfs-slim/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  ( cd "$WORK/rootfs-slim/usr/share"
    find doc -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    find doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf groff/* info/* linda/* lintian/overrides/* locale/* man/* )
  import_rootfs "$WORK/rootfs" debian:12
  import_rootfs "$WORK/rootfs-slim" debian:12-slim
  # redis:7 stand-in: debian:12-slim + Debian's redis-server 7.0 (the official image is 7.4,
  # built from source, with protected-mode compiled off, uid/gid 999, entrypoint dropping root).
  mkdir -p "$WORK/redis"
  cat >"$WORK/redis/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
# like the official image: `redis-server` implied for flags/.conf, root drops to redis:redis,
# protected-mode off by default (the official image patches its default; Debian keeps it on).
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  shift
  case "$1" in -v|--version|-h|--help) set -- redis-server "$@" ;;
               ''|-*) set -- redis-server --protected-mode no "$@" ;;
               *) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;; esac
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
umask 0077
exec "$@"
EOF
  cat >"$WORK/redis/Dockerfile" <<'EOF'
FROM debian:12-slim
RUN groupadd -r -g 999 redis && useradd -r -g redis -u 999 -d /data redis \
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* && install -d -o redis -g redis -m 0755 /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
  podman build -q --pull=never -t docker.io/library/redis:7 "$WORK/redis"
  podman tag docker.io/library/redis:7 localhost/redis:7
  podman images
}

step_build() {
  cd "$SRC"
  local t0=$SECONDS
  podman build --pull=never -t distkitd:test . 2>&1 | tee "$WORK/build.log"
  echo "build: $((SECONDS - t0)) s"
  check "build stage installs no lint, test or Redis packages" \
    bash -c '! grep -qE "Setting up (clang-tidy|clang-format|redis-server|python3-grpcio|libgtest)" "$0"' "$WORK/build.log"
  check "image sets DISTKIT_ADDR for its CLI" \
    bash -c 'podman image inspect distkitd:test --format "{{.Config.Env}}" | grep -q DISTKIT_ADDR=unix:/run/distkit/distkitd.sock'

  podman image inspect distkitd:test --format '{{.Size}} bytes, user={{.Config.User}} entrypoint={{.Config.Entrypoint}} env={{.Config.Env}}'
  podman images distkitd:test
}

# ---- step 4 ------------------------------------------------------------------------------------
IMG=${IMG:-distkitd:test}
SOCK=unix:/run/distkit/distkitd.sock
cli() {  # cli [podman run options...] -- distkit args...   (a throw-away CLI container on the volume)
  local opts=()
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done; shift
  podman run --rm --network none -v dk-sock:/run/distkit "${opts[@]}" --entrypoint distkit "$IMG" --addr "$SOCK" "$@"
}
FAILS=0
check() { local what=$1; shift; if "$@"; then echo "PASS: $what"; else echo "FAIL: $what"; FAILS=$((FAILS + 1)); fi; }
step_clean() {
  podman rm -f -v -t 0 dk-daemon dk-redis dk-bind >/dev/null 2>&1 || true
  podman volume rm -f dk-sock >/dev/null 2>&1 || true
  podman network rm -f dk-net >/dev/null 2>&1 || true
}
step_run() {
  step_clean
  podman network create dk-net >/dev/null            # netavark bridge + aardvark-dns (names resolve)
  podman volume create dk-sock >/dev/null
  podman run -d --name dk-redis --network dk-net --network-alias redis redis:7 \
    redis-server --appendonly yes >/dev/null
  for _ in $(seq 50); do podman exec dk-redis redis-cli ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
  check "redis-server runs as redis (999)" test "$(podman exec dk-redis awk '/^Uid/ {print $2}' /proc/1/status)" = 999
  # the daemon: read-only root filesystem, all capabilities dropped, no new privileges
  # --read-only-tmpfs=false: podman's --read-only otherwise adds writable tmpfs on /tmp, /var/tmp
  # and /run; Docker's --read-only and Kubernetes' readOnlyRootFilesystem add none.
  podman run -d --name dk-daemon --network dk-net --read-only --read-only-tmpfs=false --cap-drop ALL \
    --security-opt no-new-privileges -v dk-sock:/run/distkit \
    -e DISTKIT_REDIS=redis://redis:6379 "$IMG" --flush_interval_ms=600000 \
    --health_listen=0.0.0.0:8081 >/dev/null
  # (a flag after the image name adds to the image's DISTKIT_LISTEN; the 10-minute LAX flush
  #  period keeps LAX increments in memory until SIGTERM, so the stop below must flush them)
  local up=0
  for _ in $(seq 50); do cli -- health >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
  check "distkit health (second container, same volume)" test $up = 1
  podman logs dk-daemon 2>&1 | head -40
  echo "-- daemon process and socket"
  podman exec dk-daemon sh -c 'id; grep -E "^(Uid|Gid|CapEff)" /proc/1/status; ls -ln /run/distkit; stat -c "%a %u:%g %F %n" /run/distkit /run/distkit/distkitd.sock'
  check "the image's CLI finds the daemon without --addr (DISTKIT_ADDR)" podman exec dk-daemon distkit health
  check "grpc health port (--health_listen) answers a probe from another container" \
    podman run --rm --network dk-net --entrypoint distkit "$IMG" --addr dk-daemon:8081 health \
    --service distkit.v1.CounterService
  check "daemon runs as 10001:10001" test "$(podman exec dk-daemon id -u):$(podman exec dk-daemon id -g)" = 10001:10001
  check "socket is 0660 10001:10001" test "$(podman exec dk-daemon stat -c '%a %u:%g' /run/distkit/distkitd.sock)" = "660 10001:10001"
  check "root filesystem is read-only" test "$(podman inspect dk-daemon --format '{{.HostConfig.ReadonlyRootfs}}')" = true
  check "daemon cannot write /etc or /tmp" bash -c '! podman exec dk-daemon sh -c "touch /etc/x || touch /tmp/x" 2>/dev/null'
  echo "-- counters through the socket"
  cli -- counter inc x
  cli -- counter inc x --delta 5
  check "counter x = 6 via CLI" test "$(cli -- --json counter get x | tr -d ' \n' | grep -o '"value":"\?6"\?' | head -1)" != ""
  echo "-- who may connect (socket 0660 in a 0770 directory, both 10001:10001)"
  check "uid 12345, gid 10001 connects" cli --user 12345:10001 -- health
  check "uid 12345 + supplementary group 10001 connects" cli --user 12345:12345 --group-add 10001 -- health
  check "uid 12345, gid 12345 is refused" bash -c "! podman run --rm --network none -v dk-sock:/run/distkit --user 12345:12345 --entrypoint distkit $IMG --addr $SOCK health"
  echo "-- SIGTERM: LAX increments pending at stop are flushed"
  cli -- counter inc lazy --lax --delta 7
  check "lax increment still pending before stop" bash -c '! podman exec dk-redis redis-cli --scan | grep -q lazy'
  local t=$SECONDS
  podman stop -t 15 dk-daemon >/dev/null
  echo "stop took $((SECONDS - t)) s"
  podman logs dk-daemon 2>&1 | tail -5
  check "exit code 0 on SIGTERM" test "$(podman inspect dk-daemon --format '{{.State.ExitCode}}')" = 0
  check "log says clean shutdown" bash -c 'podman logs dk-daemon 2>&1 | grep -q "clean shutdown: every lax increment flushed"'
  check "lax increment reached Redis" bash -c 'podman exec dk-redis redis-cli --scan | grep -q lazy'
  podman exec dk-redis sh -c 'redis-cli hgetall "$(redis-cli --scan --pattern "*:lazy")"' | head -4
  podman exec dk-redis sh -c 'for k in $(redis-cli --scan); do printf "%s %s\n" "$k" "$(redis-cli type "$k")"; done' | head
  check "socket removed on exit" bash -c '! podman run --rm -v dk-sock:/run/distkit --entrypoint sh '"$IMG"' -c "test -e /run/distkit/distkitd.sock"'
  echo "-- a host bind mount (root-owned 0755 dir) instead of the named volume"
  local d; d=$(mktemp -d); chmod 0755 "$d"
  podman run -d --name dk-bind --network dk-net -v "$d":/run/distkit -e DISTKIT_REDIS=redis://redis:6379 "$IMG" >/dev/null
  podman wait dk-bind >/dev/null 2>&1 || true
  podman logs dk-bind 2>&1 | tail -1
  check "root-owned bind mount: the daemon exits 1 naming the socket path" bash -c \
    'test "$(podman inspect dk-bind --format "{{.State.ExitCode}}")" = 1 && podman logs dk-bind 2>&1 | grep -q /run/distkit' 
  podman rm -f -t 0 dk-bind >/dev/null
  chown 10001:10001 "$d"; chmod 0770 "$d"   # what a bind mount needs
  podman run -d --name dk-bind --network dk-net -v "$d":/run/distkit -e DISTKIT_REDIS=redis://redis:6379 "$IMG" >/dev/null
  sleep 2; check "bind mount owned 10001:10001 works" test -S "$d/distkitd.sock"
  podman rm -f -t 0 dk-bind >/dev/null
  rm -rf "$d"
  echo "step 4: $FAILS failure(s)"
  step_clean
}

# ---- step 5 (optional): podman-compose 1.0.3 on the unmodified docker-compose.yml ------------
# It ignores profiles (starts `cli`, which exits 64), depends_on conditions and stop_grace_period
# (stops with -t 10); healthchecks never run by themselves (podman needs systemd timers for them).
step_compose() {
  cd "$SRC"
  local pc=(podman-compose -p distkitlab)   # fixed project name: container names below
  "${pc[@]}" down -v >/dev/null 2>&1 || true
  "${pc[@]}" up --build -d
  for _ in $(seq 50); do podman healthcheck run distkitlab_distkitd_1 >/dev/null 2>&1 && break; sleep 0.2; done
  check "compose: cli health" "${pc[@]}" run --rm cli health
  check "compose: cli counter inc" "${pc[@]}" run --rm cli counter inc x --delta 3
  "${pc[@]}" stop
  check "compose: distkitd exits 0 on stop" \
    test "$(podman inspect distkitlab_distkitd_1 --format '{{.State.ExitCode}}')" = 0
  podman logs distkitlab_distkitd_1 2>&1 | tail -1
  "${pc[@]}" down -v
  podman network rm -f distkitlab_default >/dev/null 2>&1 || true   # 1.0.3's down leaves it
}

# ---- main (step_run / step_clean are defined above) ----
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  [[ -f $CONTAINERS_CONF ]] || write_containers_conf
  for s in "${@:-all}"; do
    case $s in
      all) for x in engine bases build run compose; do echo "== $x $(ts)"; "step_$x"; done ;;
      engine|bases|build|run|compose|clean) echo "== $s $(ts)"; "step_$s" ;;
      *) echo "unknown step $s" >&2; exit 2 ;;
    esac
  done
  echo "== done $(ts): $FAILS check(s) failed"
  [[ $FAILS -eq 0 ]] || exit 1
fi
