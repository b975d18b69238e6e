#!/usr/bin/env bash
# A VO of N endorsers (default 50), each publishing one small image, and a
# site that supports the VO: times the first sync (trust all, import all)
# and an unchanged re-sync. Sources are directories, so this measures
# vmic's own work (list and catalog checks, state, store), not a network.
# Usage: scripts/bench-vo.sh [N]
set -euo pipefail
N=${1:-50}
cd "$(dirname "$0")/.."
cargo build -q --release
VMIC=$PWD/target/release/vmic
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export XDG_STATE_HOME=$W/state
mkdir -p "$W/keys" "$W/www"
$VMIC -q keygen -W --out "$W/keys/manager.key"
{
  echo '[vo]'; echo 'name = "bench"'; echo 'expires = "30d"'
} > "$W/vo.toml"
for i in $(seq 1 "$N"); do
  e=e$i
  $VMIC -q keygen -W --out "$W/keys/$e.key"
  mkdir -p "$W/src/$e"
  head -c 65536 /dev/urandom > "$W/src/$e/$e-os.img"
  $VMIC -q build "$W/src/$e" --key "$W/keys/$e.key" --out "$W/www/$e"
  printf '[[endorser]]\nname = "%s"\npubkey = "keys/%s.key.pub"\nurls = ["file://%s/www/%s/"]\n' \
    "$e" "$e" "$W" "$e" >> "$W/vo.toml"
done
$VMIC -q vo build "$W/vo.toml" --key "$W/keys/manager.key" --out "$W/www/vo"
$VMIC -q --site "$W/site" site init
$VMIC -q --site "$W/site" vo add bench --pubkey "$W/keys/manager.key.pub" --url "$W/www/vo"
t0=$(date +%s.%N)
$VMIC -q --site "$W/site" sync
t1=$(date +%s.%N)
$VMIC -q --site "$W/site" sync
t2=$(date +%s.%N)
imported=$($VMIC --site "$W/site" images --json | grep -c '"state": "imported"' || true)
echo "VO of $N endorsers: first sync $(echo "$t1 - $t0" | bc) s ($imported images imported), unchanged re-sync $(echo "$t2 - $t1" | bc) s"
