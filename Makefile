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

.PHONY: demo all test lint venv venv-test snakemake-demo clean-results

# Printed after the demo: where the results are and the test-split metrics of each evaluated run.
define SUMMARY
import json, pathlib, yaml
preset = yaml.safe_load(open("params.yaml"))["preset"]
print(f"\nResults are in results/{preset}/ (metrics: results/{preset}/eval/, curves: dvc plots show)")
for path in sorted(pathlib.Path(f"results/{preset}/eval").glob("*.json")):
    m = json.loads(path.read_text())
    print(f"  {path.stem:<16} mIoU {m['miou']:.3f}  mean acc {m['macc']:.3f}  pixel acc {m['pacc']:.3f}")
endef
export SUMMARY

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
	@$(BIN)/python -c "$$SUMMARY"

## all: every ablation, the analysis and REPORT.md through DVC (`dvc repro`) on the active preset
all: venv
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro
	@$(BIN)/python -c "$$SUMMARY"

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
