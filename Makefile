# `make demo` and `make test` create .venv themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format bench e2e association train-tiny gpu-check compile-report clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev,video]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) infer.py --demo

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks.kernels

e2e: $(STAMP)
	$(PY) -m experiments.e2e

# the association benchmark on the recipe's stage-1 detector (about an hour on 2 cores)
association: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m experiments.association --detector outputs/tiny_recipe/stage1/checkpoint_latest.pth

# the run that makes gmpvis/assets/gmpvis_tiny.pth (both stages of the tiny recipe)
train-tiny: $(STAMP)
	$(PY) -m experiments.train_tiny --ship

# on a CUDA machine (~8 min): pytest -m gpu, the kernel model group, r50 360p inference;
# results under benchmarks/results/<gpu name>/. Without a GPU: prints the plan, exits 2.
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check

compile-report: $(STAMP)
	$(PY) -m benchmarks.compile_report

clean:
	rm -rf $(VENV) outputs .pytest_cache
