#!/usr/bin/env bash
# Wall time of the whole demo grid (every experiment, every seed, analysis, REPORT.md) from a fresh clone, as a new
# user runs it: the clone, the environment install and the run itself, through DVC (`make all`) or Snakemake
# (`make venv` then `snakemake --cores N`).
#
#   bench/grid_wall.sh dvc WORK_DIR                 # make all
#   bench/grid_wall.sh snakemake WORK_DIR [CORES]   # make venv, then snakemake --cores CORES (default 2) with the
#                                                   # venv on PATH, as the Makefile sets it for DVC
#
# WORK_DIR must not exist; the clone is made there from this checkout's HEAD, the log goes to WORK_DIR.log and the
# record (tool, commit, seconds, exit status, load average before and after, the report's agreement line) to
# WORK_DIR.json. Run it on an otherwise idle machine and say so; the grid takes about two hours on two cores.
set -euo pipefail
tool=${1:?usage: bench/grid_wall.sh dvc|snakemake WORK_DIR [CORES]}
work=${2:?usage: bench/grid_wall.sh dvc|snakemake WORK_DIR [CORES]}
cores=${3:-2}
case $tool in
    dvc) cmd="make all" ;;
    snakemake) cmd="make venv && PATH=\$PWD/.venv/bin:\$PATH HF_HUB_OFFLINE=1 snakemake --cores $cores" ;;
    *) echo "bench/grid_wall.sh: tool must be dvc or snakemake, not '$tool'" >&2; exit 2 ;;
esac
[[ -e $work ]] && { echo "bench/grid_wall.sh: $work exists; give a new folder" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
git clone --quiet "$repo" "$work"
commit=$(git -C "$work" rev-parse --short HEAD)
status=0
(cd "$work" && bash -c "$cmd") >"$work.log" 2>&1 || status=$?
end=$(date +%s)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
agreement=$(grep -m1 -o 'over [0-9]* comparisons: .*' "$work"/results/*/REPORT.md 2>/dev/null || true)

python3 - "$work.json" <<EOF
import json, sys
record = {"tool": "$tool", "command": "$cmd", "commit": "$commit", "wall_s": $end - $start, "exit_status": $status,
          "loadavg_before": "$load_before", "loadavg_after": "$load_after", "agreement": """$agreement""".strip()}
with open(sys.argv[1], "w") as f:
    json.dump(record, f, indent=2)
print(json.dumps(record, indent=2))
EOF
exit $status
