#!/usr/bin/env bash
# The one-GPU check: steps 1-3 about 8 minutes on one H100-class GPU (most of it torch.compile), step 4 (the rehearsal)
# about 4 more, not yet run on a GPU; a 10-minute device slot takes GPU_CHECK=throughput or GPU_CHECK=rehearsal. Installs
# nothing.
#
#   bench/gpu_check.sh [OUT_DIR]          # default results/bench/gpu_check; PYTHON=... picks the interpreter
#   OFFICIAL_CMX=.refs/RGBX_Semantic_Segmentation OFFICIAL_PRIMKD=.refs/PrimKD bench/gpu_check.sh
#
# 1. training throughput side by side (bench/train_throughput.py, one process, alternating rounds): the CMX step and
#    the PrimKD step, MiT-B2, 480×640, the params batch, as the official code trains (the official classes, fp32 eager,
#    when OFFICIAL_CMX / OFFICIAL_PRIMKD name checkouts; README, "Development"), the project's networks the same way
#    (fp32_eager), and the project optimised: bf16 autocast, fused attention, channels-last, torch.compile;
# 2. a 300-iteration PrimKD training on synthetic 480×640 scenes whose loss must fall (bench/gpu_train_check.py);
# 3. evaluation throughput, single scale and multi-scale + flip, fp32 eager vs optimised;
# 4. the rehearsal of nyuv2_b4_official (bench/rehearse.py through DVC: its real sizes, 3 iterations per training, 2
#    test images), fp32 eager as released and the project's bf16 / channels-last / torch.compile (about 4 minutes;
#    GPU_CHECK=rehearsal runs it alone, GPU_CHECK=throughput steps 1-3 alone);
# then the ratio tables. Exit status 1 if a step failed (the tables are printed anyway).
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

official=()
for pair in "cmx:${OFFICIAL_CMX:-}" "primkd:${OFFICIAL_PRIMKD:-}"; do
    name=${pair%%:*} dir=${pair#*:}
    if [[ -z $dir ]]; then
        echo "official $name: not measured (set OFFICIAL_${name^^} to a checkout; README, \"Benchmarks\")"
    elif [[ -f $dir/models/builder.py ]]; then
        official+=("--official-$name" "$dir")
    else
        echo "bench/gpu_check.sh: OFFICIAL_${name^^}=$dir is not a checkout (no models/builder.py)" >&2
        exit 1
    fi
done

status=0
start=$SECONDS
step() {  # step NAME COMMAND...: run, time, remember a failure
    local t0=$SECONDS
    echo "== $1"
    shift
    "$@" || status=1
    echo "   ($((SECONDS - t0)) s)"
}
WHICH=${GPU_CHECK:-all}
if [[ $WHICH != rehearsal ]]; then
step "training throughput, side by side" "$PYTHON" bench/train_throughput.py --device cuda \
    --tasks train_cmx train_student --compile --iters 8 --warmup 3 --rounds 3 "${official[@]}" \
    --out "$OUT/train_throughput.json"
step "PrimKD training, 300 iterations" "$PYTHON" bench/gpu_train_check.py --device cuda --iters 300 \
    --out "$OUT/train_check.json"
step "evaluation throughput" "$PYTHON" bench/train_throughput.py --device cuda --tasks eval_single eval_multi \
    --configs fp32_eager optimised --iters 5 --warmup 2 --rounds 3 --out "$OUT/eval_throughput.json"
fi
if [[ $WHICH != throughput ]]; then
    # The stage commands run from DVC subprocesses: the interpreter's folder must be on PATH.
    PATH="$(dirname "$PYTHON"):$PATH"
    for pair in "fp32_released:amp=none channels_last=false compile=false" \
                "optimised:amp=bf16 channels_last=true compile=true"; do
        name=${pair%%:*} sets=()
        for kv in ${pair#*:}; do sets+=(--set "train.$kv"); done
        step "rehearsal of nyuv2_b4_official, $name" "$PYTHON" bench/rehearse.py --preset nyuv2_b4_official \
            --tool dvc --iterations 3 --test-images 2 --scratch "$OUT/rehearsal_$name" "${sets[@]}" \
            --out "$OUT/rehearsal_$name.json"
    done
fi

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
for name in ("fp32_released", "optimised"):
    path = out / f"rehearsal_{name}.json"
    if path.is_file():
        r = json.loads(path.read_text())
        print(f"rehearsal of nyuv2_b4_official, {name} ({r['device']}): pipeline {r['pipeline_wall_s']:.0f} s")
        for run, m in r["measured"]["runs"].items():
            mem = m["peak_memory_train_json"] or {}
            print(f"  {run}: step {m['step_s']} s (first {m['step_first_s']} s), GPU peak "
                  f"{mem.get('cuda_allocated_mib')} MiB, eval s/image {m['eval_s_per_image']}")
        for scope in ("main", "grid"):
            if scope in r["projection"]:
                p = r["projection"][scope]
                print(f"  PROJECTION {scope}: {p['projected_wall_days']} days on this GPU; floor {p['h100_floor_s']} s "
                      f"at {r['h100_share']:.0%} of an H100's bf16 peak")
check = reports.get("train_check.json")
if check:
    print(f"PrimKD training, {check['iters']} iterations at {check['images_per_s']:.1f} img/s: loss "
          f"{check['loss_first_window']:.3f} -> {check['loss_last_window']:.3f} (ratio {check['ratio']:.2f}): "
          f"{'PASS' if check['passed'] else 'FAIL'}")
student = reports.get("train_throughput.json", {}).get("ratios", {}).get("train_student", {})
for baseline in ("official", "fp32_eager"):
    r = student.get(f"optimised/{baseline}")
    if r:
        met = r["images_per_s"] >= 2 and r.get("peak_mib", 1.0) <= 0.6
        print(f"issue 7 goal for student training against {baseline} (>= 2x images/s, <= 0.6x peak memory): "
              f"{r['images_per_s']:.2f}x, {r.get('peak_mib', float('nan')):.2f}x: {'met' if met else 'NOT met'}")
EOF
exit $status
