#!/usr/bin/env bash
# Installs every Debian 12 package distkitd needs to build, test, lint and run (idempotent,
# non-interactive). Runs apt only when something is missing, and `apt-get update` only when the
# package lists are missing, older than a day, or do not know a missing package.
# Root is needed for installing; sudo is used when not root.
#
#   scripts/install-deps.sh          # install what is missing
#   scripts/install-deps.sh --check  # exit 1 (and list them) if packages are missing
#   scripts/install-deps.sh --build  # only what building distkitd + distkit needs (the
#                                    # Dockerfile's build stage: no lint, tests or Redis)
set -euo pipefail

BUILD_PACKAGES=(
  build-essential g++ cmake ninja-build pkg-config ca-certificates
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libhiredis-dev
  libabsl-dev libspdlog-dev libevent-dev libssl-dev prometheus-cpp-dev libyaml-cpp-dev
)
PACKAGES=(
  # toolchain
  build-essential g++ clang cmake ninja-build pkg-config git ca-certificates
  # lint (the repo's .clang-format / .clang-tidy)
  clang-format clang-tidy
  # libraries (see CMakeLists.txt)
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libhiredis-dev
  libabsl-dev libspdlog-dev libevent-dev libssl-dev prometheus-cpp-dev libgtest-dev libgmock-dev
  libyaml-cpp-dev
  # tests: a real Redis, the Python e2e client
  redis-server redis-tools python3 python3-grpcio python3-protobuf
  # tests: TLS certificates for the TLS redis-server (tests/support/tls_certs.cc)
  openssl
)

mode=${1:-}
if [[ "$mode" == --build ]]; then
  PACKAGES=("${BUILD_PACKAGES[@]}")
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi
echo "install-deps: missing: ${missing[*]}"
if [[ "$mode" == --check ]]; then
  exit 1
fi

SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || { echo "install-deps: run as root (sudo not found)" >&2; exit 1; }
  SUDO=(sudo)
fi
apt_get() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

lists_fresh() {
  # Fresh = some Packages index exists and none of them is older than a day.
  local lists=/var/lib/apt/lists
  compgen -G "$lists/*_Packages*" >/dev/null || return 1
  [[ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin +1440 -print -quit)" ]]
}
all_known() {
  local pkg
  for pkg in "${missing[@]}"; do
    apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 || return 1
  done
}

updated=0
if ! lists_fresh || ! all_known; then
  apt_get update
  updated=1
fi
if ! apt_get install --no-install-recommends "${missing[@]}"; then
  ((updated)) && exit 1
  echo "install-deps: install failed; retrying after apt-get update" >&2
  apt_get update
  apt_get install --no-install-recommends "${missing[@]}"
fi
echo "install-deps: done"
