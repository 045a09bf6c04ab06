# Two commands: `make demo` and `make test`. Each creates .venv if missing and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Deterministic, quiet, offline W&B by default; a user may export WANDB_MODE=online.
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install demo test test-fast results benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/syn2real fit --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest -ra

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow"

# Source-only on the digits benchmark, 3 seeds, aggregated (docs/results.md).
results: install
	for s in 0 1 2; do $(BIN)/syn2real fit --config configs/digits/source_only.yaml \
	  --seed_everything $$s --trainer.default_root_dir runs/results/source_only/seed$$s || exit 1; done
	$(BIN)/syn2real aggregate runs/results/source_only/seed*/metrics.json

benchmarks: install
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/loader_throughput.py

clean:
	rm -rf runs wandb lightning_logs .pytest_cache
