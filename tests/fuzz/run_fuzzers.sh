#!/usr/bin/env bash
# Runs every libFuzzer target built in a fuzz build directory for a bounded time each, seeded
# from the checked-in fixtures. Used by `bash cmake/ga.sh test` (the CI); also by hand:
#
#   bash tests/fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_PER_TARGET]    (default 30)
#
# A crash, a sanitizer report or a leak fails the run and leaves the reproducer in
# BUILD_DIR/fuzz-artifacts/. Each target's corpus grows in BUILD_DIR/fuzz-corpus/<target>
# and is reused by the next run.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: bash tests/fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_PER_TARGET]" >&2; exit 2; }
build=$(cd "$1" && pwd)
seconds=${2:-30}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fixtures=$root/tests/fixtures

# Seeds per target: files or directories (missing ones are skipped).
seeds_for() {
  case $1 in
    fuzz_tokenizer)   echo "$root/tests/fuzz/seeds/tokenizer" ;;
    fuzz_json)        echo "$fixtures/reference_expected.json" ;;
    fuzz_safetensors) echo "$fixtures/reference.safetensors" ;;
    fuzz_image)       echo "$fixtures/images" ;;
    fuzz_zip)         echo "$fixtures/checkpoints" ;;
    fuzz_pickle)      echo "$root/tests/fuzz/seeds/pickle" ;;
    fuzz_npy)         echo "$fixtures/convert/npy_f32_2x3.npy $fixtures/convert/npy_i64_3.npy $fixtures/convert/npy_f16_2x2x1.npy $fixtures/convert/npy_bool_scalar.npy $fixtures/convert/npy_u8_0x4.npy" ;;
    *)                echo "" ;;
  esac
}

# stb_image computes `0u << 32` for some corrupt JPEG/PNG streams (a shift by the type's width:
# undefined in C, harmless on every target we build for, result discarded); it is stb's code,
# not ours, so it is suppressed by function name here and nowhere else.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/tests/fuzz/ubsan.supp"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"

mapfile -t targets < <(find "$build/tests/fuzz" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x | sort)
[[ ${#targets[@]} -gt 0 ]] || { echo "[fuzz] no fuzz_* executables under $build" >&2; exit 1; }
mkdir -p "$build/fuzz-artifacts"
# Targets run side by side, GA_FUZZ_JOBS at a time (default: one per core), each on its own
# core for its full time; a target's exit status goes to a file, read once all are done.
max_jobs=${GA_FUZZ_JOBS:-$(nproc)}
names=()
for exe in "${targets[@]}"; do
  name=$(basename "$exe")
  corpus=$build/fuzz-corpus/$name
  mkdir -p "$corpus"
  for s in $(seeds_for "$name"); do
    if [[ -d $s ]]; then
      find "$s" -maxdepth 2 -type f -size -2M -exec cp -n {} "$corpus/" \; 2>/dev/null || true
    elif [[ -f $s ]]; then
      cp -n "$s" "$corpus/" 2>/dev/null || true
    fi
  done
  while [[ $(jobs -rp | wc -l) -ge $max_jobs ]]; do sleep 1; done
  echo "[fuzz] $name: ${seconds} s, corpus $(find "$corpus" -type f | wc -l) files"
  rm -f "$build/fuzz-$name.rc"
  ( rc=0
    "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$name-" "$corpus" >"$build/fuzz-$name.log" 2>&1 || rc=$?
    echo "$rc" >"$build/fuzz-$name.rc" ) &
  names+=("$name")
done
wait
failed=()
for name in "${names[@]}"; do
  if [[ $(cat "$build/fuzz-$name.rc" 2>/dev/null) != 0 ]]; then
    echo "[fuzz] $name failed:"
    tail -n 60 "$build/fuzz-$name.log"
    failed+=("$name")
  else
    echo "[fuzz] $name: $(grep -E '^stat::number_of_executed_units|^Done' "$build/fuzz-$name.log" | tr '\n' ' ')"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "[fuzz] FAILED: ${failed[*]} (reproducers in $build/fuzz-artifacts/)" >&2
  exit 1
fi
echo "[fuzz] all ${#targets[@]} targets ran ${seconds} s each without a finding"
