#!/usr/bin/env bash
# scripts/bench.sh — measure vmic against its performance bars and peer tools.
#
# Usage:
#   scripts/bench.sh                 # full size (about 5 GiB of data, several minutes)
#   QUICK=1 scripts/bench.sh         # smoke test, well under a minute
#   BIG_MIB=1024 RUNS=5 scripts/bench.sh
#
# Knobs (environment): BENCH_DIR (where the temp dir goes, default /tmp),
# BIG_MIB (data set A, one file), SMALL_COUNT x SMALL_MIB (data set B),
# TINY_COUNT x 1 MiB (data set C), CATALOG_IMAGES x 4 KiB (data set D),
# HUGE_IMAGES images + as many revocations (data set E, catalog only),
# RUNS (best of N timings), QUICK=1 (small defaults for all of the above).
#
# This is a benchmark, not a test: a missed bar prints FAIL but the script
# still exits 0. It exits non-zero only when a command it runs fails.
set -euo pipefail

# EPOCHREALTIME and awk must use '.' as the decimal point.
export LC_ALL=C

# ---------------------------------------------------------------- settings --

if [[ "${QUICK:-0}" == 1 ]]; then
    : "${BIG_MIB:=256}" "${SMALL_COUNT:=16}" "${SMALL_MIB:=8}"
    : "${TINY_COUNT:=200}" "${CATALOG_IMAGES:=1000}" "${HUGE_IMAGES:=20000}" "${RUNS:=1}"
fi
BIG_MIB=${BIG_MIB:-2048}
SMALL_COUNT=${SMALL_COUNT:-64}
SMALL_MIB=${SMALL_MIB:-32}
TINY_COUNT=${TINY_COUNT:-1000}
TINY_MIB=1
CATALOG_IMAGES=${CATALOG_IMAGES:-10000}
CATALOG_IMAGE_BYTES=4096
RUNS=${RUNS:-3}

MIB=$((1 << 20))
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORES=$(nproc)

# ------------------------------------------------------------------ helpers --

log() { printf '# %s\n' "$*" >&2; }

die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 2
}

# Floating-point arithmetic: calc 'EXPR' [name=value ...], e.g. calc 'a/b' a=1 b=3.
calc() {
    local expr=$1
    shift
    local args=()
    local kv
    for kv in "$@"; do args+=(-v "$kv"); done
    awk "${args[@]}" "BEGIN { print ($expr) }"
}

# fmt PRECISION NUMBER
fmt() { printf "%.${1}f" "$2"; }

# verdict VALUE OP BAR -> PASS or FAIL (OP is >= or <=).
verdict() {
    if awk -v v="$1" -v b="$3" -v op="$2" \
        'BEGIN { exit !((op == ">=") ? (v >= b) : (v <= b)) }'; then
        echo PASS
    else
        echo FAIL
    fi
}

# Decimal GB/s, as the bars are stated: bytes / 1e9 / seconds.
gbps() { calc 'b / 1e9 / s' b="$1" s="$2"; }

# Total size in bytes of the given files.
bytes_of() { stat -c %s -- "$@" | awk '{ t += $1 } END { printf "%d", t }'; }

# A reproducible stream of BYTES incompressible bytes, keyed by SEED.
# AES-CTR over zeros runs at GB/s, unlike /dev/urandom; CTR adds no padding,
# so bounding the input bounds the output and nothing dies of SIGPIPE.
random_stream() {
    local seed=$1 bytes=$2 key
    key=$(printf '%s' "$seed" | sha256sum | cut -c1-32)
    head -c "$bytes" /dev/zero |
        openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt
}

# make_files DIR COUNT BYTES_EACH SEED: COUNT files named img-NNNNN.img.
make_files() {
    local dir=$1 count=$2 each=$3 seed=$4
    mkdir -p "$dir"
    random_stream "$seed" $((count * each)) |
        split -b "$each" -d -a 5 --additional-suffix=.img - "$dir/img-"
}

# Read every file once so timings measure hashing, not the disk.
warm() { cat -- "$@" >/dev/null; }

# On a shared 2-core machine anything else running (a cargo build next door)
# skews the numbers badly, so the timed runs also account for CPU time that
# was not ours: system-wide busy ticks minus the ticks of this shell and its
# children. Builtins only (no forks) so the sampling itself costs nothing.
FOREIGN_TICKS=0 CAPACITY_TICKS=0
CLK_TCK=$(getconf CLK_TCK)
cpu_sample() { # sets SAMPLE_BUSY and SAMPLE_OURS, in clock ticks
    local _cpu user nice system _idle _iowait irq softirq _rest
    read -r _cpu user nice system _idle _iowait irq softirq _rest </proc/stat
    SAMPLE_BUSY=$((user + nice + system + irq + softirq))
    local -a f
    read -r -a f </proc/$$/stat
    # utime, stime, cutime, cstime (the comm field "(bash)" has no spaces).
    SAMPLE_OURS=$((f[13] + f[14] + f[15] + f[16]))
}

# best_of RESULT_VAR SETUP CMD...: run SETUP (untimed) then CMD, RUNS times;
# store the fastest wall-clock time of CMD in seconds in RESULT_VAR.
# Results go through a variable, not $(...), so that set -e still stops the
# script when CMD fails.
best_of() {
    local result_var=$1 setup=$2
    shift 2
    local best="" i t0 t1 dt busy0 ours0
    for ((i = 0; i < RUNS; i++)); do
        "$setup"
        cpu_sample
        busy0=$SAMPLE_BUSY ours0=$SAMPLE_OURS
        t0=$EPOCHREALTIME
        "$@"
        t1=$EPOCHREALTIME
        cpu_sample
        FOREIGN_TICKS=$((FOREIGN_TICKS + (SAMPLE_BUSY - busy0) - (SAMPLE_OURS - ours0)))
        dt=$(calc 'b - a' a="$t0" b="$t1")
        CAPACITY_TICKS=$(calc 'c + d * n * h' c="$CAPACITY_TICKS" d="$dt" n="$CORES" h="$CLK_TCK")
        if [[ -z $best ]] || awk -v d="$dt" -v b="$best" 'BEGIN { exit !(d < b) }'; then
            best=$dt
        fi
    done
    printf -v "$result_var" '%s' "$best"
}

no_setup() { :; }

# The peers, each hashing the files one after another on one core.
peer_openssl() { openssl dgst -sha256 "$@" >/dev/null; }
peer_sha256sum() { sha256sum -- "$@" >/dev/null; }
# The HEPiX vmcatcher tools hash with a streaming hashlib.sha512 loop like this.
PY_SHA512='
import hashlib, sys
for path in sys.argv[1:]:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
    print(h.hexdigest(), path)
'
peer_python_sha512() { python3 -c "$PY_SHA512" "$@" >/dev/null; }

vmic() { "$VMIC" --quiet "$@"; }

# The Markdown table, one row per measurement.
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }

# ------------------------------------------------------------------- checks --

# Everything must sit in the page cache at once, or the timings measure the
# disk: demand at most half of the available memory.
data_bytes=$((BIG_MIB * MIB + SMALL_COUNT * SMALL_MIB * MIB + TINY_COUNT * TINY_MIB * MIB +
    CATALOG_IMAGES * CATALOG_IMAGE_BYTES))
mem_avail=$(($(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) * 1024))
if ((data_bytes > mem_avail / 2)); then
    die "data sets need $((data_bytes / MIB)) MiB but only $((mem_avail / MIB)) MiB of memory is available; lower the sizes"
fi
BENCH_PARENT=${BENCH_DIR:-/tmp}
disk_avail=$(($(df -Pk -- "$BENCH_PARENT" | awk 'NR == 2 { print $4 }') * 1024))
if ((data_bytes + 256 * MIB > disk_avail)); then
    die "data sets need $((data_bytes / MIB)) MiB but $BENCH_PARENT has $((disk_avail / MIB)) MiB free"
fi
for tool in openssl sha256sum python3 /usr/bin/time split; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# -------------------------------------------------------------------- setup --

log "building vmic (release)"
(cd "$REPO" && cargo build --release)
VMIC=${CARGO_TARGET_DIR:-$REPO/target}/release/vmic
[[ -x $VMIC ]] || die "no binary at $VMIC"

WORK=$(mktemp -d "$BENCH_PARENT/vmic-bench.XXXXXX")
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
# Make Ctrl-C and kill go through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM

vmic keygen --out "$WORK/key" -W
KEY=$WORK/key
PUB=$WORK/key.pub

log "machine: $CORES core(s); measuring single-core openssl sha256 (3 s)"
# -mr prints "+F:<n>:sha256:<bytes per second>" for the one block size asked for.
ssl_speed=$(openssl speed -mr -bytes 1048576 -seconds 3 sha256 2>/dev/null |
    awk -F: '/^\+F:/ { print $4 }')
[[ -n $ssl_speed ]] || die "could not parse the output of openssl speed"
limit_gbps=$(calc 'c * s / 1e9' c="$CORES" s="$ssl_speed")
single_gbps=$(calc 's / 1e9' s="$ssl_speed")

log "generating data sets under $WORK ($((data_bytes / MIB)) MiB)"
mkdir -p "$WORK/A"
random_stream A $((BIG_MIB * MIB)) >"$WORK/A/big.img"
make_files "$WORK/B" "$SMALL_COUNT" $((SMALL_MIB * MIB)) B
make_files "$WORK/C" "$TINY_COUNT" $((TINY_MIB * MIB)) C
make_files "$WORK/D" "$CATALOG_IMAGES" "$CATALOG_IMAGE_BYTES" D

# ----------------------------------------------------- A and B: throughput --

# FRESH_OUT is the out dir a timed `vmic build --rehash` writes; it is removed
# before every run so each build starts from nothing.
FRESH_OUT=
# The build state (digest cache) is keyed by OUT_DIR and lives outside it:
# a fresh build needs a fresh state directory too.
export VMIC_BUILD_STATE=$WORK/build-state
fresh_out() { rm -rf -- "$FRESH_OUT" "$VMIC_BUILD_STATE"; }

# throughput NAME LABEL: time vmic and the peers over data set NAME.
throughput() {
    local name=$1 label=$2
    local dir=$WORK/$name out=$WORK/out-$name
    local files=("$dir"/*.img)
    local bytes
    bytes=$(bytes_of "${files[@]}")

    log "$name ($label): untimed build to have a catalog to verify"
    vmic build "$dir" --key "$KEY" --out "$out"
    warm "${files[@]}"

    local t_verify t_build t_openssl t_sha256sum t_python
    log "$name: vmic verify"
    best_of t_verify no_setup vmic verify "$out" --pubkey "$PUB"
    log "$name: vmic build --rehash --link-images"
    FRESH_OUT=$WORK/fresh-$name
    # The bar compares hashing with openssl's; copying the images into the
    # publication (the default) is disk work on top, so the timed build
    # hard-links them. PERFORMANCE.md gives the copy's cost separately.
    best_of t_build fresh_out vmic build "$dir" --key "$KEY" --out "$FRESH_OUT" --rehash --link-images
    fresh_out
    log "$name: openssl dgst -sha256"
    best_of t_openssl no_setup peer_openssl "${files[@]}"
    log "$name: sha256sum"
    best_of t_sha256sum no_setup peer_sha256sum "${files[@]}"
    log "$name: python3 hashlib.sha512 loop"
    best_of t_python no_setup peer_python_sha512 "${files[@]}"

    local g_verify g_build g_openssl g_sha256sum g_python
    g_verify=$(gbps "$bytes" "$t_verify")
    g_build=$(gbps "$bytes" "$t_build")
    g_openssl=$(gbps "$bytes" "$t_openssl")
    g_sha256sum=$(gbps "$bytes" "$t_sha256sum")
    g_python=$(gbps "$bytes" "$t_python")

    echo
    echo "== $name: $label, $(calc 'b / 1e9' b="$bytes") GB, best of $RUNS"
    printf '  %-32s %8.3f s  %6.2f GB/s\n' \
        "vmic verify" "$t_verify" "$g_verify" \
        "vmic build --rehash" "$t_build" "$g_build" \
        "openssl dgst -sha256" "$t_openssl" "$g_openssl" \
        "sha256sum" "$t_sha256sum" "$g_sha256sum" \
        "python3 hashlib.sha512 loop" "$t_python" "$g_python"

    local r pct
    r=$(calc 'a / b' a="$g_verify" b="$g_openssl")
    row "$name: verify vs openssl dgst" "$(fmt 2 "$g_verify") GB/s" "$(fmt 2 "$g_openssl") GB/s" \
        "$(fmt 2 "$r")×" "≥ 2.0×" "$(verdict "$r" '>=' 2.0)"
    r=$(calc 'a / b' a="$g_verify" b="$g_sha256sum")
    row "$name: verify vs sha256sum" "$(fmt 2 "$g_verify") GB/s" "$(fmt 2 "$g_sha256sum") GB/s" \
        "$(fmt 2 "$r")×" "≥ 7×" "$(verdict "$r" '>=' 7)"
    r=$(calc 'a / b' a="$g_build" b="$g_openssl")
    row "$name: build --rehash vs openssl dgst" "$(fmt 2 "$g_build") GB/s" "$(fmt 2 "$g_openssl") GB/s" \
        "$(fmt 2 "$r")×" "≥ 1.0×" "$(verdict "$r" '>=' 1.0)"
    pct=$(calc '100 * a / b' a="$g_verify" b="$limit_gbps")
    row "$name: verify vs physical limit ($CORES × openssl speed)" "$(fmt 2 "$g_verify") GB/s" \
        "$(fmt 2 "$limit_gbps") GB/s" "$(fmt 0 "$pct") %" "≥ 90 %" "$(verdict "$pct" '>=' 90)"
    r=$(calc 'a / b' a="$g_verify" b="$g_python")
    row "$name: verify vs python sha512 loop (vmcatcher-style)" "$(fmt 2 "$g_verify") GB/s" \
        "$(fmt 2 "$g_python") GB/s" "$(fmt 2 "$r")×" "—" "info"
}

throughput A "1 × ${BIG_MIB} MiB"
throughput B "${SMALL_COUNT} × ${SMALL_MIB} MiB"

# -------------------------------------------------------- A: peak memory --

# Memory must not grow with image size: verify of the one big file is the
# worst case for anything that buffers a whole file.
log "A: peak RSS of vmic verify"
/usr/bin/time -v -o "$WORK/time-v.txt" "$VMIC" --quiet verify "$WORK/out-A" --pubkey "$PUB"
rss_kib=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$WORK/time-v.txt")
rss_mib=$(calc 'k / 1024' k="$rss_kib")
echo
echo "== A: peak RSS of vmic verify: $(fmt 1 "$rss_mib") MiB"
row "A: peak RSS of verify" "$(fmt 1 "$rss_mib") MiB" "—" "—" "≤ 64 MiB" "$(verdict "$rss_mib" '<=' 64)"

# ------------------------------------------------- C: digest-cache rebuild --

# A rebuild with nothing changed must reuse the digest cache, not re-hash.
log "C: first build (fresh out dir) and rebuild with nothing changed"
C_FILES=("$WORK/C"/*.img)
warm "${C_FILES[@]}"
FRESH_OUT=$WORK/out-C
t_first='' t_second=''
best_of t_first fresh_out vmic build "$WORK/C" --key "$KEY" --out "$FRESH_OUT"
# The out dir now holds the last first-build, cache included.
best_of t_second no_setup vmic build "$WORK/C" --key "$KEY" --out "$FRESH_OUT"
pct=$(calc '100 * b / a' a="$t_first" b="$t_second")
echo
echo "== C: ${TINY_COUNT} × ${TINY_MIB} MiB, best of $RUNS"
printf '  %-32s %8.3f s\n' "first build (no cache)" "$t_first" "rebuild, nothing changed" "$t_second"
printf '  %-32s %8.1f %%\n' "rebuild / first" "$pct"
row "C: rebuild with nothing changed, ${TINY_COUNT} images" "$(fmt 3 "$t_second") s" \
    "$(fmt 3 "$t_first") s (first build)" "$(fmt 1 "$pct") %" "≤ 10 %" "$(verdict "$pct" '<=' 10)"

# ------------------------------------------------------ D: catalog loading --

# Signature check, parse and validation of a big catalog, no image hashing.
log "D: catalog of $CATALOG_IMAGES images, verify --catalog-only"
vmic build "$WORK/D" --key "$KEY" --out "$WORK/out-D" --no-images
catalog_bytes=$(bytes_of "$WORK/out-D/catalog.json")
t_catalog=''
best_of t_catalog no_setup vmic verify "$WORK/out-D" --pubkey "$PUB" --catalog-only
echo
echo "== D: verify --catalog-only, $CATALOG_IMAGES images, catalog.json $((catalog_bytes / 1024)) KiB"
printf '  %-32s %8.3f s\n' "vmic verify --catalog-only" "$t_catalog"
row "D: verify --catalog-only, ${CATALOG_IMAGES} images" "$(fmt 3 "$t_catalog") s" "—" "—" \
    "≤ 0.5 s" "$(verdict "$t_catalog" '<=' 0.5)"

# ------------------------------------- E: huge catalogs, images + revocations --

# A catalog of N empty images and N revocations, written directly and signed
# with `vmic sign` (no files needed for --catalog-only); timed at N/4, N/2
# and N to show the curve is near-linear.
huge_catalog() { # DIR COUNT
    mkdir -p "$1"
    python3 - "$1/catalog.json" "$2" "$PUB" <<'PY'
import base64, json, struct, sys
out, n, pub = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = base64.b64decode(open(pub).read().split("\n")[1])
key_id = "%016X" % struct.unpack("<Q", raw[2:10])[0]
empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
images = [{"id": "img-%d" % i, "version": "1", "path": "images/%d.raw" % i, "size": 0,
           "sha256": empty, "chunk_size": 8388608, "chunks": [], "format": "raw"} for i in range(n)]
revoked = [{"id": "gone-%d" % i, "reason": "end of life", "revoked_at": "2026-01-01T00:00:00Z"}
           for i in range(n)]
json.dump({"format": "vmic.catalog/1", "endorser": {"name": "bench", "key_id": key_id},
           "serial": 1, "issued": "2026-01-01T00:00:00Z", "expires": "2999-01-01T00:00:00Z",
           "previous_sha256": None, "images": images, "revoked": revoked}, open(out, "w"))
PY
    vmic sign "$1/catalog.json" --key "$KEY"
}
HUGE_IMAGES=${HUGE_IMAGES:-100000}
echo
echo "== E: verify --catalog-only, N images + N revocations, best of $RUNS"
for n in $((HUGE_IMAGES / 4)) $((HUGE_IMAGES / 2)) "$HUGE_IMAGES"; do
    log "E: catalog of $n images and $n revocations"
    huge_catalog "$WORK/E-$n" "$n"
    t_huge=''
    best_of t_huge no_setup vmic verify "$WORK/E-$n" --pubkey "$PUB" --catalog-only
    printf '  %-32s %8.3f s  (catalog.json %d KiB)\n' "N = $n" "$t_huge" \
        "$(( $(bytes_of "$WORK/E-$n/catalog.json") / 1024 ))"
done
row "E: verify --catalog-only, ${HUGE_IMAGES} images + ${HUGE_IMAGES} revocations" \
    "$(fmt 3 "$t_huge") s" "—" "—" "< 2 s" "$(verdict "$t_huge" '<=' 2)"

# ------------------------------------------------------------------ report --

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
# Tick accounting is coarse, so a few percent either way is noise.
foreign_pct=$(calc '(c > 0 && f > 0) ? 100 * f / c : 0' f="$FOREIGN_TICKS" c="$CAPACITY_TICKS")
if awk -v p="$foreign_pct" 'BEGIN { exit !(p > 5) }'; then
    foreign_note="WARNING: other processes used about $(fmt 0 "$foreign_pct") % of the CPU during the timed runs; the numbers are not trustworthy, re-run on an idle machine."
else
    foreign_note="Other processes used about $(fmt 0 "$foreign_pct") % of the CPU during the timed runs."
fi
echo
echo "## Results"
echo
echo "| Measurement | vmic | Peer | Ratio / figure | Bar | Result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Machine: $CORES core(s) (\`nproc\`), ${cpu_model:-unknown CPU};" \
    "\`openssl speed -bytes 1048576 -seconds 3 sha256\` single core: $(fmt 2 "$single_gbps") GB/s" \
    "(physical limit $(fmt 2 "$limit_gbps") GB/s);" \
    "$(openssl version | cut -d' ' -f1-2), $(sha256sum --version | head -n1), Python $(python3 -c 'import platform; print(platform.python_version())')."
echo "Data: A = 1 × ${BIG_MIB} MiB, B = ${SMALL_COUNT} × ${SMALL_MIB} MiB," \
    "C = ${TINY_COUNT} × ${TINY_MIB} MiB, D = ${CATALOG_IMAGES} × $((CATALOG_IMAGE_BYTES / 1024)) KiB;" \
    "page cache warm; times are the best of ${RUNS} wall-clock run(s); GB = 10^9 bytes."
echo "$foreign_note"
