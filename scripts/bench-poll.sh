#!/usr/bin/env bash
# scripts/bench-poll.sh — what polling costs an endorser's web server.
# N endorsers (default 20) publish on one nginx; a site trusts them all,
# syncs once, then syncs again with nothing changed. nginx's access log
# records `$bytes_sent` (headers and body) for every request; the script
# prints the bytes per endorser of the unchanged sync (issue 12 bar:
# under 2 KB per endorser), against what a whole-catalog fetch costs
# (`curl` of every catalog.json and its signature, the old behaviour).
#
# Usage: scripts/bench-poll.sh [N]      Needs nginx and curl.
set -euo pipefail
export LC_ALL=C
N=${1:-20}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench-poll.sh: nginx is required" >&2; exit 2; }
cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
VMIC=$REPO/target/release/vmic
WORK=$(mktemp -d /tmp/vmic-bench-poll.XXXXXX)
NGINX_PID=
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export XDG_STATE_HOME=$WORK/state VMIC_SITE=$WORK/site

# Each endorser publishes 4 images of 8 MiB with 64 KiB chunks: a catalog
# of a realistic size (chunk digests make up most of it).
for i in $(seq 1 "$N"); do
    mkdir -p "$WORK/src/e$i"
    for j in 1 2 3 4; do
        head -c $((8 << 20)) /dev/urandom > "$WORK/src/e$i/img$j.raw"
    done
    "$VMIC" -q keygen -W --out "$WORK/e$i.key"
    "$VMIC" -q build "$WORK/src/e$i" --key "$WORK/e$i.key" --out "$WORK/www/e$i" --chunk-size 64K
done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; user root;
error_log $WORK/nginx/error.log; pid $WORK/nginx/nginx.pid;
events { worker_connections 64; }
http { log_format bytes '\$bytes_sent \$request_uri';
  access_log $WORK/nginx/access.log bytes; sendfile on;
  client_body_temp_path $WORK/nginx/b; proxy_temp_path $WORK/nginx/p;
  fastcgi_temp_path $WORK/nginx/f; uwsgi_temp_path $WORK/nginx/u; scgi_temp_path $WORK/nginx/s;
  server { listen 127.0.0.1:$PORT; root $WORK/www; location / { } } }
CONF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/e1/catalog.json" && break; sleep 0.05; done

"$VMIC" -q site init
for i in $(seq 1 "$N"); do
    "$VMIC" -q trust add "e$i" --pubkey "$WORK/e$i.key.pub" --url "http://127.0.0.1:$PORT/e$i/"
done
"$VMIC" -q sync
sum_log() { awk '{ s += $1 } END { print s + 0 }' "$WORK/nginx/access.log"; }
requests() { wc -l < "$WORK/nginx/access.log"; }

: > "$WORK/nginx/access.log"
"$VMIC" -q sync
sleep 0.2
polled=$(sum_log); polled_requests=$(requests)

: > "$WORK/nginx/access.log"
for i in $(seq 1 "$N"); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/e$i/catalog.json.minisig"
    curl -s -o /dev/null "http://127.0.0.1:$PORT/e$i/catalog.json"
done
sleep 0.2
whole=$(sum_log)

catalog_size=$(stat -c %s "$WORK/www/e1/catalog.json")
echo "# $N unchanged endorsers, catalog.json of $catalog_size bytes each"
echo "| | bytes sent by nginx | per endorser | requests |"
echo "|---|---|---|---|"
echo "| vmic sync, nothing changed | $polled | $((polled / N)) | $polled_requests |"
echo "| whole catalog + signature (curl) | $whole | $((whole / N)) | $((2 * N)) |"
awk -v p="$polled" -v n="$N" 'BEGIN { printf "bar: under 2048 bytes per endorser: %s (%.0f)\n", (p / n < 2048 ? "PASS" : "FAIL"), p / n }'
