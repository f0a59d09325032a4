#!/usr/bin/env bash
# The seed's MLP (784-128-10, Adam 1e-3, Fashion-MNIST) in wgnn and in its peers, one
# after the other in one run on this machine, with the ratios that the performance
# targets are stated in (only ratios from one run count: machines differ day to day).
#
#   benches/peers.sh [cpu|lavapipe|gemm|all] [EPOCHS]   (default: cpu 3)
#
# cpu:      60,000 images per epoch at batch 32 and 128: wgnn's PyTorch-style loop
#           and `fit`, PyTorch CPU, Candle, Burn `flex` (median epoch of EPOCHS).
# lavapipe: 6,000 images per epoch at batch 32 and 128: wgnn's GPU backend and Burn's
#           wgpu backend on the same adapter (median of EPOCHS, so the first,
#           cold epoch does not count when EPOCHS >= 3).
# gemm:     square products 512, 1024, 2048 on the default adapter: Burn's wgpu
#           matmul (benches/peers/burn_gemm, built like the peers into
#           $PEERS_TARGET) and wgnn's `bench --only matmul` (tune cache off),
#           alternated for two rounds; each product followed by a 1-element readback.
#
# Needs `apt-get install dataset-fashion-mnist` and the peers built as
# ../shared/peers/README.md says (binaries in $PEERS_TARGET/release, default
# /tmp/peers-target; PyTorch from $TORCH_PY, default python3). A peer that is
# missing shows as n/a. Every program's full output goes to target/peers.log.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-cpu}
epochs=${2:-3}
data=/usr/share/datasets/fashion-mnist
peers=${PEERS_TARGET:-/tmp/peers-target}/release
peer_src=${PEER_SRC:-../shared/peers}
py=${TORCH_PY:-python3}
log=target/peers.log
[ -d "$data" ] || { echo "peers.sh: no $data (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
cargo build --release --example bench -q
bench=target/release/examples/bench
: > "$log"

# The median epoch seconds a program prints, or n/a when it is missing or fails.
median() {
    local exe=$1
    if [ ! -x "$exe" ] && ! command -v "$exe" >/dev/null; then echo n/a; return; fi
    echo "\$ $*" >> "$log"
    local out
    if out=$("$@" 2>&1); then
        echo "$out" >> "$log"
        echo "$out" | sed -n 's/^median epoch \([0-9.]*\)s.*/\1/p' | tail -1
    else
        echo "$out" >> "$log"
        echo n/a
    fi
}

# ratio A B: A/B with two decimals, or n/a.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
fastest() { printf '%s\n' "$@" | grep -v n/a | sort -g | head -1 || true; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
if [ "$what" = cpu ] || [ "$what" = all ]; then
    echo
    echo "CPU, 60,000 images per epoch, median of $epochs epochs (seconds)"
    printf '%-6s %10s %10s %10s %10s %10s   %s\n' batch wgnn-loop wgnn-fit pytorch candle burn-flex "wgnn-loop / fastest peer"
    for b in 32 128; do
        w_loop=$(median "$bench" --peer-mlp cpu "$b" "$epochs")
        w_fit=$(median "$bench" --peer-mlp cpu "$b" "$epochs" 0 "$data" --fit)
        torch=$(median "$py" "$peer_src/torch_seed_mlp.py" "$data" "$epochs" "$b")
        candle=$(median "$peers/candle_mlp" "$b" "$epochs")
        burn=$(median "$peers/burn_mlp" flex "$b" "$epochs")
        best=$(fastest "$torch" "$candle" "$burn")
        printf '%-6s %10s %10s %10s %10s %10s   %s (fit: %s)\n' "$b" "$w_loop" "$w_fit" "$torch" "$candle" "$burn" \
            "$(ratio "$w_loop" "${best:-n/a}")" "$(ratio "$w_fit" "${best:-n/a}")"
    done
fi
if [ "$what" = lavapipe ] || [ "$what" = all ]; then
    echo
    adapter=$(vulkaninfo --summary 2>/dev/null | sed -n 's/.*deviceName *= *//p' | head -1 || true)
    echo "GPU backend on ${adapter:-the default adapter (named in $log)}, 6,000 images per epoch, median of $epochs epochs (seconds)"
    printf '%-6s %10s %10s   %s\n' batch wgnn burn-wgpu "wgnn / burn"
    for b in 32 128; do
        w=$(median "$bench" --peer-mlp gpu "$b" "$epochs" 6000)
        burn=$(median "$peers/burn_mlp" wgpu "$b" "$epochs" 6000)
        printf '%-6s %10s %10s   %s\n' "$b" "$w" "$burn" "$(ratio "$w" "$burn")"
    done
fi
if [ "$what" = gemm ] || [ "$what" = all ]; then
    echo
    echo "GEMM on the default adapter, GFLOP/s (two rounds, alternated)"
    for round in 1 2; do
        if [ -x "$peers/burn_gemm" ]; then
            "$peers/burn_gemm" 512 1024 2048 2>&1 | tee -a "$log" | sed -n "s/^gemm \([0-9]*\): .*, \([0-9.]*\) GFLOP.*/round $round burn \1 \2/p"
        else
            echo "round $round burn n/a (build benches/peers/burn_gemm into $peers)"
        fi
        WGNN_CACHE_DIR=off "$bench" --only matmul 2>&1 | tee -a "$log" | awk -v r="$round" '$1 == "matmul" && $2 >= 512 && $6 ~ /^[0-9.]+$/ { print "round " r " wgnn " $2 " " $6 }'
    done
fi
echo
echo "full output: $log"
