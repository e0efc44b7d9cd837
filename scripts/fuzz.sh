#!/usr/bin/env bash
# Long fuzz campaigns (README.md#fuzzing-and-the-soak-test): builds the libFuzzer targets of
# fuzz/ with clang in build-fuzz/ (-DDISTKIT_FUZZ=ON: address + undefined sanitizers, libFuzzer)
# and runs each one for SECONDS (default 60), one at a time in one process, starting from its
# committed seed corpus.
# New inputs go to a scratch corpus (build-fuzz/corpus/<target>/); the committed corpus
# (fuzz/corpus/<target>/) is only updated, minimized by merge, with --update-corpus.
#
#   scripts/fuzz.sh [SECONDS] [--update-corpus] [TARGET...]
#   FUZZ_ARGS='-max_len=4096' scripts/fuzz.sh 600 request_fuzz
#
# A crash leaves its input as build-fuzz/crash-* (reproduce: build-fuzz/fuzz/<target> FILE) and
# makes the script exit non-zero after the other targets ran.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

seconds=60
update=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --update-corpus) update=1 ;;
    ''|*[!0-9]*) targets+=("$arg") ;;
    *) seconds=$arg ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(sed -n 's/^dk_fuzz(\([a-z_]*\) .*/\1/p' fuzz/CMakeLists.txt)
fi

build=${BUILD_DIR:-build-fuzz}
cc=${CC:-clang-14}
cxx=${CXX:-clang++-14}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache
                                         -DCMAKE_C_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_CXX_COMPILER="$cxx" -DDISTKIT_FUZZ=ON -DDISTKIT_BUILD_TESTS=OFF \
  -DDISTKIT_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target "${targets[@]}"

failed=()
for t in "${targets[@]}"; do
  scratch="$build/corpus/$t"
  mkdir -p "$scratch"
  echo "== $t: ${seconds}s"
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of libFuzzer flags
  if ! (cd "$build" && "fuzz/$t" -max_total_time="$seconds" \
          -print_final_stats=1 ${FUZZ_ARGS:-} "corpus/$t" "../fuzz/corpus/$t"); then
    failed+=("$t")
  fi
  if [[ $update -eq 1 ]]; then
    fresh=$(mktemp -d)
    "$build/fuzz/$t" -merge=1 "$fresh" "fuzz/corpus/$t" "$scratch" >/dev/null 2>&1
    rm -f "fuzz/corpus/$t"/*
    cp "$fresh"/* "fuzz/corpus/$t"/
    rm -rf "$fresh"
    echo "== $t: committed corpus now $(ls "fuzz/corpus/$t" | wc -l) inputs"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: crashes in ${failed[*]} (inputs: $build/crash-*)" >&2
  exit 1
fi
echo "fuzz: ok"
