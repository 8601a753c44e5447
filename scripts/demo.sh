#!/usr/bin/env bash
# The README's demo: built-in images -> LMDB -> a short progressive training on the CPU (8 -> 16 -> 32 px) -> grids.
#
#   bash scripts/demo.sh OUT_DIR
#
# Writes OUT_DIR/images (the demo photographs), OUT_DIR/demo.lmdb, OUT_DIR/run/{checkpoint,sample} and
# OUT_DIR/generated/{sample.png,sample_mixing_*.png}. Deterministic (--seed 0, one thread count per machine);
# about half a minute on 2 CPU cores. Environment: PYTHON (default: python), ITERATIONS (default 300),
# DEVICE (default cpu).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: bash scripts/demo.sh OUT_DIR" >&2
    exit 2
fi
OUT=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
ITERATIONS=${ITERATIONS:-300}
DEVICE=${DEVICE:-cpu}
MARKER=.stylegan_cuda_demo

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: '$PYTHON' not found; set PYTHON=/path/to/python" >&2
    exit 2
fi
# Never write over a folder the demo did not make; a folder it made is cleared and made again.
if [[ -e $OUT && ! -d $OUT ]]; then
    echo "error: $OUT exists and is not a folder" >&2
    exit 2
fi
if [[ -d $OUT && -n $(ls -A "$OUT") && ! -f $OUT/$MARKER ]]; then
    echo "error: $OUT is not empty and was not made by this demo; give a new or empty folder" >&2
    exit 2
fi
mkdir -p "$OUT"
touch "$OUT/$MARKER"
rm -rf "$OUT/images" "$OUT/demo.lmdb" "$OUT/run" "$OUT/generated"

start=$(date +%s)
echo "== 1/4 demo images"
"$PYTHON" -m stylegan_cuda.data.demo "$OUT/images"

echo "== 2/4 LMDB at 8, 16, 32 px"
"$PYTHON" "$ROOT/prepare_data.py" --out "$OUT/demo.lmdb" --sizes 8,16,32 --n_worker 1 "$OUT/images"

echo "== 3/4 training $ITERATIONS iterations on $DEVICE (8 -> 16 -> 32 px)"
# 500 images per fade-in and per stable stage at batch 16: 63 iterations at 8 px, 63 at 16 px, then 32 px.
"$PYTHON" "$ROOT/train.py" "$OUT/demo.lmdb" --out "$OUT/run" --device "$DEVICE" --seed 0 \
    --init_size 8 --max_size 32 --phase 500 --batch 16 --iterations "$ITERATIONS" \
    --loss r1 --mixing \
    --channel_base 1024 --max_channels 32 --code_dim 32 --n_mlp 4 \
    --log_every 50 --sample_every 50 --save_every 100

echo "== 4/4 sample and style-mixing grids"
last=$(printf "%s/run/checkpoint/%06d.pt" "$OUT" "$ITERATIONS")
"$PYTHON" "$ROOT/generate.py" "$last" --out "$OUT/generated" --device "$DEVICE" --seed 0 \
    --n_row 3 --n_col 5 --n_mixing 2 --mixing_range all

echo "== done in $(( $(date +%s) - start )) s: samples during training in $OUT/run/sample, grids in $OUT/generated"
