#!/usr/bin/env bash
# Everything a lent GPU session runs, in one call: build, the full test suite (CUDA tests included), the
# benchmarks. Logs and result JSON go to $OUT (default: benchmarks/results/gpu_check) so they come back.
#   bash benchmarks/gpu_check.sh [tests|ops|model|all]   (default: all)
# The device tool allows 600 s a call; each part stays under it by its timeouts below (tests: 200 + 330 s, ops:
# 120 + 400 s, model: 500 s): run the parts as separate calls. The benchmarks write their JSON as they go, so a part
# cut short by its timeout still returns what it measured.
# The lent H100/H200 image (Python 3.12, torch 2.11) lacks lmdb: carry it as a wheel in .whl/ (ignored by git):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl lmdb
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
what=${1:-all}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then  # packages the device image lacks (lmdb), carried as wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  c++ --version | head -1
  $PY -c "import torch; print(torch.__config__.show())" | grep -i "compiler\|CXX_FLAGS" | cut -c1-200
  date -u
} 2>&1 | tee "$OUT/gpu_info.txt"
$PY -m stylegan_cuda.build 2>&1 | tee -a "$OUT/gpu_info.txt"
if [[ $what == all || $what == tests ]]; then
  # C++ errors from registered ops: raised, or a crash (seen on the H100 image with torch 2.11)?
  timeout "${PROBE_TIMEOUT:-200}" $PY scripts/throw_probe.py 2>&1 | tee "$OUT/throw_probe.log"
  parallel=$($PY -c "import xdist; print('-n 8')" 2>/dev/null)  # pytest-xdist, where installed
  # The ahead-of-time build test is CPU-only and runs in CI: not worth the GPU minutes.
  timeout "${TEST_TIMEOUT:-330}" $PY -m pytest -q --no-header -p no:cacheprovider $parallel \
    --deselect tests/test_build.py::test_ahead_of_time_build_agrees_with_the_reference \
    2>&1 | tee "$OUT/pytest.log" | tail -40
fi
if [[ $what == all || $what == ops ]]; then
  # where the time goes at the README's target shapes (the kernels of one iteration), then every shape
  timeout "${PROFILE_TIMEOUT:-120}" $PY -m benchmarks.ops --device cuda --quick --profile > "$OUT/bench_ops_profile.log" 2>&1
  timeout "${BENCH_TIMEOUT:-400}" $PY -m benchmarks.ops --device cuda 2>&1 | tee "$OUT/bench_ops.log" | tail -60
fi
if [[ $what == all || $what == model ]]; then
  timeout "${MODEL_BENCH_TIMEOUT:-500}" $PY -m benchmarks.model --device cuda 2>&1 | tee "$OUT/bench_model.log" | tail -30
fi
cp benchmarks/results/*cuda*.json "$OUT/" 2>/dev/null
ls "$OUT"
