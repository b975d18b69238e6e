#!/usr/bin/env bash
# scripts/bench-catalog-size.sh — does the catalog grow with the bytes
# published? (issue 12 bar: the catalog entry of a 64 GiB image is within
# 1 KB of an 8 MiB image's). Two images, 8 MiB and 64 GiB (sparse files,
# so the disk holds almost nothing; hashing reads 64 GiB of zeroes once),
# are built in catalog format 2 and, from the digest cache, in format 1.
# Prints each image's entry size in both formats, the catalog sizes, and
# the chunk index the 64 GiB image's entry names in format 2.
#
# Usage: scripts/bench-catalog-size.sh [BIG_GIB]   (default 64)
set -euo pipefail
export LC_ALL=C
BIG_GIB=${1:-64}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
VMIC=$REPO/target/release/vmic
WORK=$(mktemp -d /tmp/vmic-bench-catalog.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export XDG_STATE_HOME=$WORK/state
mkdir -p "$WORK/images"
head -c $((8 << 20)) /dev/urandom > "$WORK/images/small.raw"
truncate -s "${BIG_GIB}G" "$WORK/images/big.raw"
KEY=$REPO/fixtures/demo-key/demo.key

entry_sizes() { # CATALOG -> "small_bytes big_bytes"
    python3 - "$1" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
size = {i["id"]: len(json.dumps(i, separators=(",", ":"))) for i in c["images"]}
print(size["small"], size["big"])
PY
}

start=$(date +%s.%N)
"$VMIC" build "$WORK/images" --key "$KEY" --out "$WORK/v2" --no-images --quiet
hashed=$(echo "$(date +%s.%N) - $start" | bc)
"$VMIC" build "$WORK/images" --key "$KEY" --out "$WORK/v1" --no-images --quiet --catalog-version 1
read -r s2 b2 < <(entry_sizes "$WORK/v2/catalog.json")
read -r s1 b1 < <(entry_sizes "$WORK/v1/catalog.json")
index=$(ls -l "$WORK"/v2/chunks/*.json | awk '{print $5}' | sort -n | tail -1)
printf 'hashing %s GiB + 8 MiB took %.1f s\n' "$BIG_GIB" "$hashed"
printf '%-22s %12s %12s %12s\n' "" "8 MiB entry" "${BIG_GIB} GiB entry" "difference"
printf '%-22s %12d %12d %12d\n' "format 1 (inline)" "$s1" "$b1" $((b1 - s1))
printf '%-22s %12d %12d %12d\n' "format 2 (indexed)" "$s2" "$b2" $((b2 - s2))
printf 'catalog.json: format 1 %d bytes, format 2 %d bytes (%.0fx smaller)\n' \
    "$(stat -c %s "$WORK/v1/catalog.json")" "$(stat -c %s "$WORK/v2/catalog.json")" \
    "$(echo "$(stat -c %s "$WORK/v1/catalog.json") / $(stat -c %s "$WORK/v2/catalog.json")" | bc -l)"
printf 'largest chunk index (fetched only by sites importing the image): %d bytes\n' "$index"
diff=$((b2 - s2)); diff=${diff#-}
if [ "$diff" -lt 1024 ]; then echo "bar (entry within 1 KB): PASS"; else echo "bar (entry within 1 KB): FAIL"; fi
