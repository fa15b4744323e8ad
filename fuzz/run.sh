#!/usr/bin/env bash
# Runs the cargo-fuzz targets of mesh-authn.
#
#   fuzz/run.sh [SECONDS]        each target for SECONDS (default 600), up to $PARALLEL at a time
#   SMOKE=1 fuzz/run.sh          each target for 20 s, one at a time (CI)
#   TARGETS="token wire" fuzz/run.sh 60
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain the nightly
# features cargo-fuzz uses (-Zsanitizer=address) are unlocked with RUSTC_BOOTSTRAP=1.
# Seeds are read from fuzz/corpus/<target>/ (committed, never written); what libFuzzer finds goes
# to fuzz/work/<target>/ (ignored). Crashes are written to fuzz/artifacts/<target>/ and make this
# script exit non-zero. Per-target logs: fuzz/work/<target>.log; a summary is printed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

if [[ "${SMOKE:-0}" == 1 ]]; then
    SECONDS_PER_TARGET="${1:-20}"
    PARALLEL="${PARALLEL:-1}"
else
    SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-600}}"
    PARALLEL="${PARALLEL:-2}"
fi
TARGETS="${TARGETS:-token jwks config paths wire rsa dpop}"
NICE="${NICE:-10}"

declare -A MAX_LEN=([token]=16384 [jwks]=16384 [config]=16384 [paths]=4096 [wire]=4096 [rsa]=1024 [dpop]=10240)
declare -A DICT=([token]=token [jwks]=json [config]=json [paths]=token [wire]= [rsa]= [dpop]=token)

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 2; }
nice -n "$NICE" cargo fuzz build -O >/dev/null

run_one() {
    local t="$1" dict_args=()
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    [[ -n "${DICT[$t]}" ]] && dict_args=("-dict=fuzz/dict/${DICT[$t]}.dict")
    if nice -n "$NICE" cargo fuzz run -O "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "${dict_args[@]}" >"fuzz/work/$t.log" 2>&1; then
        echo ok >"fuzz/work/$t.result"
    else
        echo "FAILED (exit $?)" >"fuzz/work/$t.result"
    fi
}

running=0
for t in $TARGETS; do
    if (( running >= PARALLEL )); then
        wait -n || true
        running=$((running - 1))
    fi
    echo "fuzzing $t for ${SECONDS_PER_TARGET}s" >&2
    run_one "$t" &
    running=$((running + 1))
done
wait || true

status=0
printf '%-8s %14s %10s %8s  %s\n' target executions exec/s corpus result
for t in $TARGETS; do
    log="fuzz/work/$t.log"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    corpus=$(find "fuzz/work/$t" -type f | wc -l)
    result=$(cat "fuzz/work/$t.result" 2>/dev/null || echo "not run")
    printf '%-8s %14s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
    if [[ "$result" != ok ]]; then
        status=1
        echo "--- $t: last lines of $log" >&2
        tail -40 "$log" >&2
    fi
done
exit "$status"
