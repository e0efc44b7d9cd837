#!/usr/bin/env bash
# Builds everything and runs every test tier: unit, integration (real redis-server), e2e (the
# real distkitd and distkit binaries, several daemons on one Redis, a Python client), fuzz (the
# fuzz targets over their seed corpus), then the unit, integration and fuzz tiers again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/test.sh            # everything
#   SANITIZE=0 scripts/test.sh # skip the sanitizer build (faster local runs)
#   CTEST_ARGS="-L unit" scripts/test.sh
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

scripts/install-deps.sh

jobs=${JOBS:-2}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$jobs"
# shellcheck disable=SC2086  # CTEST_ARGS is a list of arguments
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600 ${CTEST_ARGS:-}

if [[ "${SANITIZE:-1}" != 0 ]]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDISTKIT_SANITIZE=ON \
    -DDISTKIT_BUILD_BENCH=OFF
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 900 -L 'unit|integration|fuzz'
fi
echo "test.sh: all tests passed"
