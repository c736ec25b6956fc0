#!/usr/bin/env bash
# Runs each libFuzzer target of the checked build for SECONDS, from its seeds in fuzz/corpus/,
# and prints one line per target: executions, coverage and features. Any crash, sanitizer report,
# leak, timeout (10 s per input) or out-of-memory (4 GB) fails, with the input saved as
# fuzz-findings/<target>/crash-*.
#   scripts/fuzz.sh BUILD_DIR SECONDS [RUNS]
# With RUNS, each target stops after RUNS executions (SECONDS is then a cap). FUZZ_TARGETS picks
# a subset ("npy_fuzz gguf_fuzz").
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1
seconds=$2
runs=${3:--1}  # -1: no limit
read -r -a targets <<<"${FUZZ_TARGETS:-npy_fuzz gguf_fuzz tokenizer_fuzz pattern_spec_fuzz cli_args_fuzz index_lists_fuzz}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "fuzz-findings/$target"
  log="$work/$target.log"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      OMP_NUM_THREADS=1 "$build/$target" -max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="fuzz-findings/$target/" \
      "$work/$target" "fuzz/corpus/$target" >"$log" 2>&1; then
    executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || echo 'cov: ?')
    took=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' || echo "$seconds")
    echo "fuzz: $target: $executed executions in $took s, $cov, no crash"
  else
    status=1
    echo "fuzz: $target: FAILED; the last lines of its log:" >&2
    tail -n 40 "$log" >&2
  fi
done
rmdir fuzz-findings/* fuzz-findings 2>/dev/null || true
exit $status
