#!/usr/bin/env bash
# scripts/bench-sync.sh — vmic sync of one large image from nginx on loopback
# against `curl -o` fetching the same file (issue bar: sync <= 1.3x curl).
#
# Usage: scripts/bench-sync.sh            (2 GiB image, best of 3)
#        SYNC_MIB=512 RUNS=1 scripts/bench-sync.sh
# Needs nginx (apt-get install nginx) and curl. Exits 0 unless a command fails.
# vmic fsyncs every image before it enters the store (crash safety); plain
# `curl -o` leaves its data in the page cache, so the table also shows curl
# followed by `sync FILE` for a like-for-like comparison.
set -euo pipefail
export LC_ALL=C

SYNC_MIB=${SYNC_MIB:-2048}
RUNS=${RUNS:-3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench-sync.sh: nginx is required" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench-sync.sh: curl is required" >&2; exit 2; }

cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
VMIC=$REPO/target/release/vmic
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/vmic-bench-sync.XXXXXX")
NGINX_PID=
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

echo "# generating a ${SYNC_MIB} MiB image and publishing it" >&2
mkdir -p "$WORK/images"
head -c $((SYNC_MIB << 20)) /dev/zero \
    | openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt > "$WORK/images/big.raw"
"$VMIC" keygen --out "$WORK/k" -W -q
"$VMIC" build "$WORK/images" --key "$WORK/k" --out "$WORK/pub" -q

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; user root;
error_log $WORK/nginx/error.log; pid $WORK/nginx/nginx.pid;
events { worker_connections 64; }
http { access_log off; sendfile on;
  client_body_temp_path $WORK/nginx/b; proxy_temp_path $WORK/nginx/p;
  fastcgi_temp_path $WORK/nginx/f; uwsgi_temp_path $WORK/nginx/u; scgi_temp_path $WORK/nginx/s;
  server { listen 127.0.0.1:$PORT; root $WORK/pub; location / { } } }
CONF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/catalog.json" && break; sleep 0.05; done
cat "$WORK/pub/images/big.raw" > /dev/null   # warm the server side

export VMIC_SITE=$WORK/site
"$VMIC" site init -q

best_curl=999999
best_sync=999999
best_durable=999999
for run in $(seq "$RUNS"); do
    # Each run starts with no dirty pages, so neither side pays for the other's writeback.
    sync
    t0=$(now); curl -s -o "$WORK/curl.out" "http://127.0.0.1:$PORT/images/big.raw"; t1=$(now)
    sync "$WORK/curl.out"; t2=$(now)
    c=$(elapsed "$t0" "$t1"); cd_=$(elapsed "$t0" "$t2"); rm -f "$WORK/curl.out"; sync
    "$VMIC" trust add b --pubkey "$WORK/k.pub" --url "http://127.0.0.1:$PORT/" -q
    t0=$(now); "$VMIC" sync -q; t1=$(now); sync
    s=$(elapsed "$t0" "$t1")
    "$VMIC" trust remove b -q
    echo "# run $run: curl -o ${c}s (with fsync ${cd_}s), vmic sync ${s}s" >&2
    best_curl=$(awk -v a="$best_curl" -v b="$c" 'BEGIN { print (b < a ? b : a) }')
    best_durable=$(awk -v a="$best_durable" -v b="$cd_" 'BEGIN { print (b < a ? b : a) }')
    best_sync=$(awk -v a="$best_sync" -v b="$s" 'BEGIN { print (b < a ? b : a) }')
done

bytes=$((SYNC_MIB << 20))
ratio=$(awk -v s="$best_sync" -v c="$best_curl" 'BEGIN { printf "%.2f", s / c }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.3 ? "PASS" : "FAIL") }')
echo
echo "| Measurement | vmic sync | curl -o | ratio | bar | result |"
echo "|---|---|---|---|---|---|"
printf '| sync %d MiB from nginx on loopback (download + hash + fsync + import) | %.2f s (%.2f GB/s) | %.2f s (%.2f GB/s) | %sx | <= 1.3x | %s |\n' \
    "$SYNC_MIB" "$best_sync" "$(awk -v b=$bytes -v t=$best_sync 'BEGIN{print b/1e9/t}')" \
    "$best_curl" "$(awk -v b=$bytes -v t=$best_curl 'BEGIN{print b/1e9/t}')" "$ratio" "$verdict"
ratio_d=$(awk -v s="$best_sync" -v c="$best_durable" 'BEGIN { printf "%.2f", s / c }')
printf '| same, against curl -o followed by sync FILE (equal durability) | %.2f s | %.2f s | %sx | info | |\n' \
    "$best_sync" "$best_durable" "$ratio_d"
