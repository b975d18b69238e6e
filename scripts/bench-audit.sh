#!/usr/bin/env bash
# scripts/bench-audit.sh — `vmic audit` against `vmic verify` (issue 13 bar:
# a first scan of 1,000 files / 20 GiB at >= 90 % of verify's throughput;
# a rescan of the unchanged set in under 0.5 s).
#
# N images of SIZE each (default 1000 x 20M = 20 GiB), each a distinct
# 64 KiB random head on a sparse file (so the disk holds almost nothing and
# both commands read the same bytes from the same files), are published
# (--link-images) and imported by a site; the site's store copies are then
# deleted (audit needs only the site's state). A hypervisor directory holds
# hard links to the same files. The script times `vmic verify OUT_DIR` and
# a first and a second `vmic audit HV_DIR`, and prints the ratio.
#
# Usage: scripts/bench-audit.sh [N] [SIZE]     (SIZE as for truncate: 20M)
set -euo pipefail
export LC_ALL=C
N=${1:-1000}
SIZE=${2:-20M}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
VMIC=$REPO/target/release/vmic
WORK=$(mktemp -d /tmp/vmic-bench-audit.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export XDG_STATE_HOME=$WORK/state VMIC_SITE=$WORK/site
mkdir -p "$WORK/images" "$WORK/hv"
for i in $(seq 1 "$N"); do
    f=$WORK/images/img$i.raw
    head -c 65536 /dev/urandom > "$f"
    truncate -s "$SIZE" "$f"
done
KEY=$REPO/fixtures/demo-key/demo.key
"$VMIC" build "$WORK/images" --key "$KEY" --out "$WORK/out" --link-images --quiet
"$VMIC" site init --quiet >/dev/null
"$VMIC" trust add demo --pubkey "$KEY.pub" --url "$WORK/out" --quiet
"$VMIC" sync --quiet
rm -rf "$WORK/site/store"/*
for i in $(seq 1 "$N"); do ln "$WORK/images/img$i.raw" "$WORK/hv/disk$i.img"; done
total=$(du -b --apparent-size -c "$WORK"/images/*.raw | tail -1 | cut -f1)

now() { date +%s.%N; }
t0=$(now); "$VMIC" verify "$WORK/out" --pubkey "$KEY.pub" --quiet; t1=$(now)
rm -f "$WORK/site/audit-cache.json"
t2=$(now); "$VMIC" audit "$WORK/hv" --quiet; t3=$(now)
t4=$(now); "$VMIC" audit "$WORK/hv" --quiet; t5=$(now)
verify=$(echo "$t1 - $t0" | bc -l)
first=$(echo "$t3 - $t2" | bc -l)
rescan=$(echo "$t5 - $t4" | bc -l)
gib=$(echo "$total / 1073741824" | bc -l)
printf '%d files, %.2f GiB\n' "$N" "$gib"
printf 'vmic verify (publication)   %7.2f s  %7.2f GiB/s\n' "$verify" "$(echo "$gib / $verify" | bc -l)"
printf 'vmic audit, first scan      %7.2f s  %7.2f GiB/s\n' "$first" "$(echo "$gib / $first" | bc -l)"
printf 'vmic audit, rescan (cache)  %7.3f s\n' "$rescan"
ratio=$(echo "$verify / $first" | bc -l)
printf 'audit throughput / verify throughput: %.2f (bar >= 0.90): %s\n' "$ratio" \
    "$(echo "$ratio >= 0.9" | bc -l | sed 's/1/PASS/;s/0/FAIL/')"
printf 'rescan under 0.5 s: %s\n' "$(echo "$rescan < 0.5" | bc -l | sed 's/1/PASS/;s/0/FAIL/')"
