#!/usr/bin/env bash
# Wall time of a fresh virtual environment with the locked packages, installed by pip or by uv, as `make venv` does.
#   bench/venv_install.sh pip|uv|pip-unlocked CACHE_DIR [VENV_DIR]
# pip-unlocked is the Makefile's recipe before the lock: newest pip, the torch pins, then `pip install -e .`.
# CACHE_DIR is the installer's download cache: an empty folder measures a first install, a filled one a reinstall.
# Prints one line: installer, cache state, seconds, load average before and after.
set -euo pipefail
tool=$1 cache=$2 venv=${3:-$(mktemp -d)/venv}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
state=$([ -n "$(ls -A "$cache" 2>/dev/null)" ] && echo warm || echo cold)
mkdir -p "$cache"
load_before=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s.%N)
"$python" -m venv "$venv"
case $tool in
    pip)
        PIP_CACHE_DIR=$cache "$venv/bin/pip" install --quiet -r "$repo/requirements.lock"
        PIP_CACHE_DIR=$cache "$venv/bin/pip" install --quiet --no-deps -e "$repo" ;;
    pip-unlocked)
        PIP_CACHE_DIR=$cache "$venv/bin/pip" install --quiet --upgrade pip
        PIP_CACHE_DIR=$cache "$venv/bin/pip" install --quiet "torch==2.14.1" "torchvision==0.29.1"
        PIP_CACHE_DIR=$cache "$venv/bin/pip" install --quiet -e "$repo[test]" ;;
    uv)
        # uv itself comes from PyPI into the new venv, as the Makefile installs it.
        PIP_CACHE_DIR=$cache/pip "$venv/bin/pip" install --quiet "uv==${UV_VERSION:-0.13.9}"
        UV_CACHE_DIR=$cache/uv "$venv/bin/uv" pip install --quiet --compile-bytecode --python "$venv/bin/python" \
            -r "$repo/requirements.lock"
        UV_CACHE_DIR=$cache/uv "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps -e "$repo" ;;
    *) echo "usage: $0 pip|uv|pip-unlocked CACHE_DIR [VENV_DIR]" >&2; exit 2 ;;
esac
end=$(date +%s.%N)
"$venv/bin/python" -c "import primkd, torch, torchvision; assert torch.__version__.startswith('2.14.1')"
printf '%s %s %.1f s (load %s -> %s)\n' "$tool" "$state" "$(echo "$end - $start" | bc)" "$load_before" \
    "$(cut -d' ' -f1 /proc/loadavg)"
