#!/usr/bin/env bash
# The repo's rules that a machine can check, as CI runs them (.ci/run, before the tests):
#   1. clang-format: every tracked C++ file is formatted (.clang-format); no diff allowed.
#   2. clang-tidy: the curated checks of .clang-tidy over our own sources (daemon/, client/,
#      cli/, bench/, fuzz/), every warning an error.
#
#   scripts/lint.sh            # both; configures build/ (for compile_commands.json) if needed
#   scripts/lint.sh --format   # clang-format only (seconds)
#   scripts/lint.sh --fix      # rewrite the files clang-format would change, then check
#   BUILD_DIR=build-x scripts/lint.sh
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

mode=${1:-all}
build=${BUILD_DIR:-build}
jobs=${JOBS:-2}

mapfile -t cxx_files < <(git ls-files '*.cc' '*.h')
if [[ "$mode" == --fix ]]; then
  clang-format -i "${cxx_files[@]}"
  mode=--format
fi

echo "lint: clang-format on ${#cxx_files[@]} files"
if ! clang-format --dry-run --Werror "${cxx_files[@]}"; then
  echo "lint: clang-format would change the files above (fix: scripts/lint.sh --fix)" >&2
  exit 1
fi
[[ "$mode" == --format ]] && { echo "lint: format ok"; exit 0; }

# clang-tidy needs the compile database and the generated headers (protos, embedded Lua).
if [[ ! -f "$build/compile_commands.json" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"$jobs" --target distkit_proto distkit_health_proto

mapfile -t tidy_files < <(git ls-files 'daemon/*.cc' 'client/*.cc' 'cli/*.cc' 'bench/*.cc' \
  'fuzz/*.cc')
echo "lint: clang-tidy on ${#tidy_files[@]} files ($jobs at a time)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --warnings-as-errors='*': any finding of the curated checks fails the run.
if ! printf '%s\n' "${tidy_files[@]}" |
  xargs -P "$jobs" -n 1 clang-tidy -p "$build" --quiet --warnings-as-errors='*' >"$log" 2>&1; then
  grep -E 'error:|warning:' "$log" | sort -u >&2 || cat "$log" >&2
  echo "lint: clang-tidy found problems (above)" >&2
  exit 1
fi
echo "lint: ok"
