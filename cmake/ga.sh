#!/usr/bin/env bash
# The README's two commands, for a fresh Debian 12 machine (run as root, or with sudo):
#
#   bash cmake/ga.sh run    install what is missing, build in Release, run the ga tool
#   bash cmake/ga.sh test   the same, plus the tests, the benchmarks (compiled, not run),
#                           the consumer/build checks, and a second build of the tests
#                           under AddressSanitizer + UBSan
#
# Safe to run again: build directories are reused, packages already present are skipped.
# Environment (all optional):
#   GA_BUILD_DIR       Release build directory            (default: build)
#   GA_ASAN_BUILD_DIR  sanitizer build directory           (default: build-asan)
#   GA_FUZZ_BUILD_DIR  libFuzzer build directory (clang)   (default: build-fuzz)
#   GA_FUZZ_SECONDS    seconds per fuzz target             (default: 20)
#   GA_JOBS            parallel jobs                       (default: nproc)
#   GA_NO_INSTALL=1    never call apt-get (fail if something is missing)
#   GA_NATIVE=0        portable binaries (default 1: -march=native, since these builds run on
#                      the machine that built them; Eigen's GEMM is 4.7x faster with AVX-512)
set -euo pipefail

usage() {
  echo "usage: bash cmake/ga.sh run|test" >&2
  exit 2
}
[[ $# -eq 1 ]] || usage
mode=$1
[[ $mode == run || $mode == test ]] || usage

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${GA_BUILD_DIR:-build}
asan_build=${GA_ASAN_BUILD_DIR:-build-asan}
fuzz_build=${GA_FUZZ_BUILD_DIR:-build-fuzz}
jobs=${GA_JOBS:-$(nproc 2>/dev/null || echo 2)}

t_start=$SECONDS
phase_start=$SECONDS
timings=()
say() { echo "[ga] $*"; }
phase() {
  phase_name=$1
  phase_start=$SECONDS
  say "$1 ..."
}
phase_done() {
  local dt=$((SECONDS - phase_start))
  timings+=("$(printf '%5d s  %s' "$dt" "$phase_name")")
  say "$phase_name: done in ${dt} s"
}
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    say "FAILED (exit $rc) during: ${phase_name:-setup}, after $((SECONDS - t_start)) s"
  fi
}
trap on_exit EXIT

# ---- 1. packages ----
packages=(cmake g++ make libeigen3-dev libstb-dev doctest-dev)
if [[ $mode == test ]]; then packages+=(libbenchmark-dev libopenblas-dev clang libclang-rt-14-dev); fi
phase "checking packages"
missing=()
for p in "${packages[@]}"; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then missing+=("$p"); fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ ${GA_NO_INSTALL:-0} == 1 ]]; then
    say "missing packages: ${missing[*]} (GA_NO_INSTALL=1, not installing)"
    exit 1
  fi
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      say "missing packages: ${missing[*]}; run as root (or install them: apt-get install ${missing[*]})"
      exit 1
    fi
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
else
  say "all packages present: ${packages[*]}"
fi
phase_done

# ---- 2. Release build ----
if [[ $mode == test ]]; then
  opts=(-DGA_BUILD_TESTS=ON -DGA_BUILD_BENCH=ON -DGA_BUILD_EXAMPLES=ON)
  targets=(all)
else
  opts=(-DGA_BUILD_TESTS=OFF -DGA_BUILD_BENCH=OFF -DGA_BUILD_EXAMPLES=ON)
  targets=(ga_cli)
fi
phase "configuring $build (Release)"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGA_SANITIZE=OFF -DGA_NATIVE="${GA_NATIVE:-1}" "${opts[@]}" >"$build/ga-configure.log" 2>&1 ||
  { cat "$build/ga-configure.log"; exit 1; }
phase_done
phase "building ${targets[*]} in $build with $jobs jobs"
cmake --build "$build" --target "${targets[@]}" -j "$jobs"
phase_done

# ---- 3. the main job: the ga tool ----
ga="$build/examples/ga"
phase "running $ga"
"$ga"
phase_done
phase "running $ga selftest"
"$ga" selftest
phase_done

# ---- 4. tests ----
if [[ $mode == test ]]; then
  phase "running ctest in $build (unit tests, ga tool, consumer and build checks)"
  (cd "$build" && ctest --output-on-failure -j "$jobs")
  phase_done

  phase "configuring $asan_build (AddressSanitizer + UBSan, -O1 -g1)"
  mkdir -p "$asan_build"
  cmake -S . -B "$asan_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DGA_SANITIZE=ON -DGA_BUILD_TESTS=ON -DGA_BUILD_BENCH=OFF -DGA_BUILD_EXAMPLES=OFF \
    >"$asan_build/ga-configure.log" 2>&1 || { cat "$asan_build/ga-configure.log"; exit 1; }
  phase_done
  phase "building ga_tests in $asan_build"
  cmake --build "$asan_build" --target ga_tests -j "$jobs"
  phase_done
  phase "running ga_tests under AddressSanitizer + UBSan"
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$asan_build/tests/ga_tests"
  phase_done

  # Every parser (images, JSON, safetensors, zip, pickle, tokenizer) under libFuzzer with
  # ASan + UBSan, for a bounded time each.
  phase "configuring $fuzz_build (clang, libFuzzer)"
  mkdir -p "$fuzz_build"
  CC=clang CXX=clang++ cmake -S . -B "$fuzz_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGA_BUILD_FUZZ=ON \
    -DGA_BUILD_TESTS=ON -DGA_BUILD_BENCH=OFF -DGA_BUILD_EXAMPLES=OFF \
    >"$fuzz_build/ga-configure.log" 2>&1 || { cat "$fuzz_build/ga-configure.log"; exit 1; }
  phase_done
  mapfile -t fuzz_targets < <(cmake --build "$fuzz_build" --target help | sed -n 's/^\.\.\. \(fuzz_[a-z_]*\).*/\1/p')
  phase "building ${fuzz_targets[*]} in $fuzz_build"
  cmake --build "$fuzz_build" --target "${fuzz_targets[@]}" -j "$jobs"
  phase_done
  phase "fuzzing each parser for ${GA_FUZZ_SECONDS:-20} s"
  bash tests/fuzz/run_fuzzers.sh "$fuzz_build" "${GA_FUZZ_SECONDS:-20}"
  phase_done
fi

say "timings ($jobs jobs):"
for t in "${timings[@]}"; do echo "[ga]   $t"; done
say "$mode: all done in $((SECONDS - t_start)) s"
