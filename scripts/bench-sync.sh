#!/usr/bin/env bash
# scripts/bench-sync.sh — vmic sync of one large image from nginx on loopback
# against `curl -o` fetching the same file (issue bar: sync <= 1.3x curl).
#
# Usage: scripts/bench-sync.sh            (2 GiB image, best of 5)
#        SYNC_MIB=512 RUNS=1 scripts/bench-sync.sh
# Needs nginx (apt-get install nginx) and curl. Exits 0 unless a command fails.
# vmic fsyncs every image before it enters the store (crash safety); plain
# `curl -o` leaves its data in the page cache, so the table also shows curl
# followed by `sync FILE` for a like-for-like comparison, and `curl -o
# /dev/null` (the network part alone) as a floor that no disk noise moves.
set -euo pipefail
export LC_ALL=C

SYNC_MIB=${SYNC_MIB:-2048}
RUNS=${RUNS:-5}
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
    | openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 -nosalt > "$WORK/images/big.raw"
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

# Disk timings on virtual machines swing widely with the host's own
# writeback, so every timed command starts from a quiet disk: all dirty data
# written, then a pause. The two tools alternate which goes first.
quiesce() {
    sync
    for _ in $(seq 100); do
        local pending
        pending=$(awk '/^(Dirty|Writeback):/ { t += $2 } END { print t }' /proc/meminfo)
        [ "$pending" -lt 16384 ] && break
        sleep 0.1
    done
    sleep 1
}

time_curl() {
    quiesce
    local t0 t1 t2
    t0=$(now); curl -s -o "$WORK/curl.out" "http://127.0.0.1:$PORT/images/big.raw"; t1=$(now)
    sync "$WORK/curl.out"; t2=$(now)
    curl_times+=("$(elapsed "$t0" "$t1")")
    durable_times+=("$(elapsed "$t0" "$t2")")
    rm -f "$WORK/curl.out"
    # The network part alone: receive and discard, no disk at all.
    quiesce
    t0=$(now); curl -s -o /dev/null "http://127.0.0.1:$PORT/images/big.raw"; t1=$(now)
    null_times+=("$(elapsed "$t0" "$t1")")
}

time_vmic() {
    "$VMIC" trust add b --pubkey "$WORK/k.pub" --url "http://127.0.0.1:$PORT/" -q
    quiesce
    local t0 t1
    t0=$(now); "$VMIC" sync -q; t1=$(now)
    sync_times+=("$(elapsed "$t0" "$t1")")
    "$VMIC" trust remove b -q
}

# best LIST / median LIST
best() { printf '%s\n' "$@" | sort -g | head -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

curl_times=() durable_times=() null_times=() sync_times=()
for run in $(seq "$RUNS"); do
    if (( run % 2 )); then time_curl; time_vmic; else time_vmic; time_curl; fi
    echo "# run $run: curl -o ${curl_times[-1]}s (with fsync ${durable_times[-1]}s, to /dev/null ${null_times[-1]}s), vmic sync ${sync_times[-1]}s" >&2
done
best_curl=$(best "${curl_times[@]}")
best_durable=$(best "${durable_times[@]}")
best_null=$(best "${null_times[@]}")
best_sync=$(best "${sync_times[@]}")
median_curl=$(median "${curl_times[@]}")
median_sync=$(median "${sync_times[@]}")

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
ratio_n=$(awk -v s="$best_sync" -v c="$best_null" 'BEGIN { printf "%.2f", s / c }')
printf '| same, against curl -o /dev/null (network only, no disk) | %.2f s | %.2f s | %sx | info | |\n' \
    "$best_sync" "$best_null" "$ratio_n"
ratio_m=$(awk -v s="$median_sync" -v c="$median_curl" 'BEGIN { printf "%.2f", s / c }')
printf '| same, medians of %d runs instead of best | %.2f s | %.2f s | %sx | info | |\n' \
    "$RUNS" "$median_sync" "$median_curl" "$ratio_m"
