# mean_geo — every target sets up what it needs by itself.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1: the pair that installs and imports together on our machines
# (constraints.txt; the package itself only asks for lower bounds)
PIP     := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
EXTRAS  ?= dev,wandb,tensorboard,faiss,slurm,optuna,onnx,bench,lora,match,geo,app

.PHONY: help install train smoke test test-fast test-kernels lint hooks bench bench-gpu clean

help:
	@echo "make train   - set up, then train MEAN on the embedded synthetic world (experiment=demo)"
	@echo "make test    - set up, then run the whole test suite"
	@echo "make test-kernels - the fast tests on SSE4.1 kernels (another CPU's rounding; CI's second lane)"
	@echo "make smoke   - the one-minute pipeline check (experiment=smoke)"
	@echo "make bench   - benchmarks -> bench/results.json (MEAN_REF=/path/to/authors/MEAN to compare)"
	@echo "make bench-gpu - what only a GPU shows (AMP, compile, CUDA memory, DDP) -> bench/results_gpu.json"
	@echo "make hooks   - pre-commit: ruff check + format, notebook outputs stripped, on every commit"
	@echo "make lint    - ruff and the pre-commit hooks on every file"
	@echo "make install - only set up .venv"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) torch torchvision
	$(PIP) -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python -m mean_geo.train experiment=demo $(ARGS)

smoke: $(STAMP)
	$(BIN)/python -m mean_geo.train experiment=smoke $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# oneDNN, ATen and MKL pick their kernels by CPU; limited to SSE4.1 they round as another machine would
OTHER_KERNELS := ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
test-kernels: $(STAMP)
	$(OTHER_KERNELS) $(BIN)/python -m pytest -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m mean_geo.bench --out bench/results.json $(ARGS)

bench-gpu: $(STAMP)
	$(BIN)/python -m mean_geo.bench --suite gpu --out bench/results_gpu.json $(ARGS)

lint: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/pre-commit run --all-files

hooks: $(STAMP)
	$(BIN)/pre-commit install

clean:
	rm -rf logs .pytest_cache .ruff_cache
