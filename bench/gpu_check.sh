#!/usr/bin/env bash
# The one-GPU check of issue 7, about 6 minutes on one H100-class GPU (budget: 8); installs nothing.
#
#   bench/gpu_check.sh [OUT_DIR]          # default results/bench/gpu_check; PYTHON=... picks the interpreter
#
# 1. training throughput, fp32 eager vs optimised (bench/train_throughput.py): teacher and PrimKD student, MiT-B2,
#    480×640, the params batch;
# 2. a 300-iteration PrimKD training on synthetic 480×640 scenes whose loss must fall (bench/gpu_train_check.py);
# 3. evaluation throughput, single scale and multi-scale + flip, fp32 eager vs optimised;
# then a short table. Exit status 1 if a step failed (the table is printed anyway).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${1:-results/bench/gpu_check}
mkdir -p "$OUT"

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "bench/gpu_check.sh: no CUDA GPU visible")' \
    || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

status=0
start=$SECONDS
step() {  # step NAME COMMAND...: run, time, remember a failure
    local t0=$SECONDS
    echo "== $1"
    shift
    "$@" || status=1
    echo "   ($((SECONDS - t0)) s)"
}
step "training throughput" "$PYTHON" bench/train_throughput.py --device cuda --tasks train_teacher train_student \
    --iters 8 --warmup 3 --repeats 3 --out "$OUT/train_throughput.json"
step "PrimKD training, 300 iterations" "$PYTHON" bench/gpu_train_check.py --device cuda --iters 300 \
    --out "$OUT/train_check.json"
step "evaluation throughput" "$PYTHON" bench/train_throughput.py --device cuda --tasks eval_single eval_multi \
    --iters 5 --warmup 2 --repeats 3 --out "$OUT/eval_throughput.json"

echo "== summary ($((SECONDS - start)) s in all)"
"$PYTHON" - "$OUT" <<'EOF' || status=1
import json, sys
from pathlib import Path

sys.path.insert(0, "bench")
from train_throughput import table

out = Path(sys.argv[1])
reports = {name: json.loads((out / name).read_text()) for name in ("train_throughput.json", "train_check.json",
                                                                   "eval_throughput.json") if (out / name).is_file()}
for name in ("train_throughput.json", "eval_throughput.json"):
    if name in reports:
        print(f"{reports[name]['device']}, {name}:\n{table(reports[name])}")
check = reports.get("train_check.json")
if check:
    print(f"PrimKD training, {check['iters']} iterations at {check['images_per_s']:.1f} img/s: loss "
          f"{check['loss_first_window']:.3f} -> {check['loss_last_window']:.3f} (ratio {check['ratio']:.2f}): "
          f"{'PASS' if check['passed'] else 'FAIL'}")
student = reports.get("train_throughput.json", {}).get("ratios", {}).get("train_student")
if student:
    met = student["speedup"] >= 2 and student["memory_ratio"] <= 0.6
    print(f"issue 7 goal for student training (>= 2x images/s, <= 0.6x peak memory): {student['speedup']:.2f}x, "
          f"{student['memory_ratio']:.2f}x: {'met' if met else 'NOT met'}")
EOF
exit $status
