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

TORCH_PINS := "torch==2.14.1" "torchvision==0.29.1"

.PHONY: demo test lint venv venv-test snakemake-demo clean-results

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

venv-test: $(VENV)/.installed-test

# The main comparison (RGB teacher, CMX baseline, PrimKD); `dvc repro` alone also runs every ablation.
MAIN_TARGETS := evaluate_teacher@rgb evaluate_cmx evaluate_student@primkd

## demo: the main comparison through DVC on the active preset of params.yaml (default: demo, synthetic data)
demo: venv
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro $(MAIN_TARGETS)
	@echo
	@echo "Results are in results/$$($(BIN)/python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["preset"])')/"
	@$(BIN)/dvc metrics show

## snakemake-demo: the same pipeline through Snakemake
snakemake-demo: venv
	$(BIN)/snakemake --cores all main

lint: venv-test
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint --cores 1 >/dev/null

test: venv-test lint
	$(BIN)/python -m pytest -q

clean-results:
	rm -rf results/*/ data/*/
