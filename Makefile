# primkd: `make demo` runs the whole pipeline on the embedded synthetic dataset; `make test` runs lint and tests.
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands (`primkd ...`) run from DVC/Snakemake subprocesses, so the venv must be on PATH.
export PATH := $(BIN):$(PATH)
# torch/timm take weights only from local files here; never reach for a hub.
export HF_HUB_OFFLINE := 1
# A CUDA wheel of torch probes for GPUs; on CPU-only machines this keeps start-up quiet.
export PYTHONUNBUFFERED := 1

# uv installs the locked packages several times faster than pip (docs/BENCHMARKS.md); pip brings it from PyPI.
UV_VERSION := 0.13.9
UV := $(BIN)/uv
# uv trusts the system's certificate store, as pip does here (/etc/pip.conf), not only its own bundled roots.
export UV_SYSTEM_CERTS := 1
# requirements.lock: every package pinned (torch 2.14.1, torchvision 0.29.1 by pyproject.toml's caps), for Python 3.11
# on any platform. `make lock` regenerates it after a change to pyproject.toml's dependencies.
LOCK_CMD := pip compile pyproject.toml --extra test --universal --python-version 3.11 -o requirements.lock

.PHONY: demo all compare exp-show check-params test lint venv venv-test lock snakemake-demo clean-results rehearse \
	pretrain

# Printed after the demo: where the results are, the teachers', CMX's and PrimKD's test-split mIoU (mean ± std over
# seeds), the PrimKD − CMX bootstrap interval, and the same models' train-split mIoU and train − test, the regime
# (= primkd compare --headline; make compare lists every run).
define SUMMARY
import yaml
from primkd.report.compare import headline
preset = yaml.safe_load(open("params.yaml"))["preset"]
print(f"\nResults are in results/{preset}/ (metrics: results/{preset}/eval/, all runs: make compare)")
print(headline(f"results/{preset}"), end="")
endef
export SUMMARY

$(UV):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "uv==$(UV_VERSION)"

# TORCH=cpu (`make demo TORCH=cpu` on a fresh clone): the same lock with the CPU build of torch and torchvision, for
# machines without a GPU (a venv of about 1.6 GB instead of 6.1 GB, docs/BENCHMARKS.md). On Linux PyPI's torch is the
# CUDA build; the packages it adds are exactly those the lock pins for Linux only (nvidia-*, cuda-*, triton), so they
# are left out, and uv's --torch-backend takes torch from PyTorch's CPU wheel index, which must be reachable
# (download.pytorch.org; PyPI has no CPU wheel of torch for Linux x86_64). The default installs the lock as it is,
# which runs on the CPU too. A venv made with TORCH=cpu stays on that route (its list of left-out packages says so).
CUDA_ONLY := $(VENV)/cuda-only.txt
TORCH ?= $(if $(wildcard $(CUDA_ONLY)),cpu,lock)
ifeq ($(TORCH),cpu)
TORCH_FLAGS := --torch-backend cpu --excludes $(CUDA_ONLY)
TORCH_DEPS := $(CUDA_ONLY)
else ifneq ($(TORCH),lock)
$(error TORCH=$(TORCH): use TORCH=cpu (CPU build of torch) or leave it unset (the lock as it is))
endif

# uv would keep the CUDA build already installed (it satisfies the lock's pins), so the CPU route needs a new venv.
$(CUDA_ONLY): requirements.lock | $(UV)
	@test ! -e $(VENV)/.installed || test -e $@ || { echo "TORCH=cpu: $(VENV) was installed from the lock as it is; \
	remove it (rm -rf $(VENV)) and rerun"; exit 2; }
	grep "sys_platform == 'linux'" requirements.lock | cut -d= -f1 > $@

# The lock holds the test tools too, so one install serves demo and test. --compile-bytecode writes the .pyc files
# now: uv installs none, so every stage process would compile torch's sources (seconds of CPU) wherever Python may not
# write them itself (PYTHONDONTWRITEBYTECODE, a read-only venv), and the first time everywhere (docs/BENCHMARKS.md).
$(VENV)/.installed: pyproject.toml requirements.lock $(TORCH_DEPS) | $(UV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python $(TORCH_FLAGS) -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	touch $@

venv: $(VENV)/.installed

venv-test: $(VENV)/.installed-test

lock: | $(UV)
	$(UV) $(LOCK_CMD)

# The main comparison (RGB teacher, CMX baseline, PrimKD); `dvc repro` alone also runs every ablation.
MAIN_TARGETS := evaluate_teacher@rgb evaluate_cmx evaluate_student@primkd

## demo: the main comparison through DVC on the active preset of params.yaml (default: demo, synthetic data)
demo: check-params
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro $(MAIN_TARGETS)
	@$(BIN)/python -c "$$SUMMARY"

## all: every ablation, the analysis and REPORT.md through DVC (`dvc repro`) on the active preset
all: check-params
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro
	@$(BIN)/python -c "$$SUMMARY"

## pretrain: rerun the pretrain stage (the demo's ImageNet-1K, params.yaml pretrain: about 2 minutes on 2 cores)
## into pretrain/; commit pretrain/ afterwards (the encoder, its summary and curve, pretrain/dvc.lock). A fresh
## clone finds the committed files up to date in both tools, so `make demo` never runs it.
pretrain: check-params
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro pretrain/dvc.yaml
	@$(BIN)/python -c "import json; s = json.load(open('pretrain/pretrain.json')); print('pretrain: held-out accuracy', \
	s['heldout'], 'in', s['train_seconds'], 's; commit pretrain/')"

## check-params: params.yaml against its schema, and the preset name, before DVC starts (its first stage,
## resolve_params, would stop on the same line)
check-params: venv
	$(BIN)/primkd check-params

## compare: the active preset's evaluated runs side by side: changed parameters, mIoU etc. (mean ± std over seeds),
## train-split mIoU and train − test
compare: venv
	$(BIN)/primkd compare

# `dvc exp show` lists every parameter and metric the stages declare (over 900 columns on any preset). Kept: the keys
# of params.yaml that differ between the experiments shown (--only-changed) and CMX's and PrimKD's test mIoU (mean
# over seeds; summary.json). Dropped: the other columns of the metrics files and the effective parameters (under
# results/), the stages' code and data dependencies, the experiments' expanded kd keys, the digests of input files
# (effective parameters' inputs), summary.json's copies of the parameters and of the other runs, and the pretrain
# stage's summary (pretrain/: its digests; its held-out accuracy is in pretrain/pretrain.json). Another column:
# `dvc exp show --keep REGEX`; every run: `primkd compare`.
EXP_SHOW_FLAGS := --only-changed \
	--drop 'results/|src/|data/|workflow/|params\.yaml$$|experiments\.|inputs\.|params\.(?!yaml:)|runs\.|pretrain/' \
	--keep 'runs\.(cmx|primkd)\.miou_pct$$'

## exp-show: `dvc exp show` cut to what differs: the changed keys of params.yaml, and CMX's and PrimKD's mIoU
exp-show: venv
	$(BIN)/dvc exp show --no-pager $(EXP_SHOW_FLAGS)

## snakemake-demo: the same pipeline through Snakemake
snakemake-demo: venv
	$(BIN)/snakemake --cores all main

## rehearse: PRESET=<paper preset> end to end at its real sizes, only the schedule cut, on generated raw files in the
## dataset's format, in a scratch copy (rehearsal/<preset>/), through DVC and Snakemake (TOOL=dvc|snakemake|both);
## prints step times, memory, evaluation time, FLOPs, the projected full wall time and the H100 floor (README)
PRESET ?= nyuv2_b2
TOOL ?= both
REHEARSE_ARGS ?=
rehearse: venv
	$(BIN)/python bench/rehearse.py --preset $(PRESET) --tool $(TOOL) $(REHEARSE_ARGS)

lint: venv-test
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint --cores 1 >/dev/null

test: venv-test lint
	$(BIN)/python -m pytest -q

clean-results:
	rm -rf results/*/ data/*/
