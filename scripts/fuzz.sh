#!/usr/bin/env bash
# Run the cargo fuzz targets (fuzz/fuzz_targets/) one after another.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]       each target for SECONDS (default 60)
#   RUNS=10000000 scripts/fuzz.sh 0 [TARGET...] each target for RUNS executions
#   SANITIZER=none scripts/fuzz.sh ...            without AddressSanitizer
#                                                 (2-3x faster; the default is ASan)
#
# New interesting inputs land in fuzz/corpus/<target>/ (kept in git and
# replayed by `cargo test --test fuzz_corpus`); run `cargo +nightly fuzz
# cmin <target> -- -use_counters=0` (edge coverage only, a few hundred
# files) before committing them. Crashes land in fuzz/artifacts/.
# Needs the nightly toolchain and `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
limit=(-max_total_time="$seconds")
if [ -n "${RUNS:-}" ]; then
    limit=(-runs="$RUNS")
fi
# The .part harness writes a file per execution: keep that in memory.
export TMPDIR=${TMPDIR:-/dev/shm}
for target in "${targets[@]}"; do
    log=$(mktemp)
    cargo +nightly fuzz run ${SANITIZER:+-s "$SANITIZER"} "$target" "corpus/$target" -- "${limit[@]}" -print_final_stats=1 2>"$log" || {
        tail -40 "$log"
        echo "fuzz: $target FAILED (see fuzz/artifacts/$target/)" >&2
        exit 1
    }
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $target ok, $runs executions"
    rm -f "$log"
done
