# Two entry points, both self-installing on a fresh Debian machine:
#   make demo  - set up, train the default SNN on Fashion-MNIST, report test accuracy
#   make test  - set up, run the test suite (CI runs this)
# Both run in the project's own virtual environment $(VENV), made from nothing but the
# declared dependencies (torch pinned first, then `pip install -e '.[dev]'`), so an import
# the project does not declare fails here as it would for a user. The environment is
# reinstalled only when pyproject.toml or this Makefile changes (stamp file).
SYSTEM_PY ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.robustsnn-installed
DATA_DIR ?= /usr/share/datasets/fashion-mnist
RUN_DIR ?= runs/demo

.PHONY: setup venv data compiler browser demo test test-browser test-slow bench gpu-check scaling

data:
	@if [ ! -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	  echo "could not install dataset-fashion-mnist; pass --data-dir or set ROBUSTSNN_DATA"; fi

# g++ builds the C++ neuron kernel on first use (without it the torch loop runs, with a notice)
compiler:
	@command -v g++ >/dev/null || (apt-get update -qq && apt-get install -y -qq g++) || \
	  echo "no g++: the neurons run on the torch loop"

browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || \
	  echo "no chromium: the browser test will skip"

$(PY):
	@$(SYSTEM_PY) -m venv $(VENV) || { rm -rf $(VENV); \
	  (apt-get update -qq && apt-get install -y -qq python3-venv) && $(SYSTEM_PY) -m venv $(VENV); }

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

setup: data compiler venv

demo: setup
	$(VENV)/bin/robustsnn train --config configs/fmnist/demo.yaml --out $(RUN_DIR)
	$(VENV)/bin/robustsnn info $(RUN_DIR)/model

test: setup browser
	# optional peers for tests/test_interop.py, never package dependencies (they would pull another torch)
	$(PY) -m pip install -q --no-deps spikingjelly==2.0.0 snntorch==1.0.0 nirtorch==2.6 loguru
	$(PY) -m pytest -q -p no:cacheprovider

test-browser: setup browser
	$(PY) -m pytest -q -p no:cacheprovider -m browser

test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow

bench: setup
	$(PY) benchmarks/neuron_speed.py
	$(PY) benchmarks/speed.py

# on a machine with a CUDA GPU: one short epoch on the GPU, then CPU-vs-GPU outputs on the same weights
gpu-check: setup
	$(PY) benchmarks/gpu_check.py
	$(PY) -m pytest -q -p no:cacheprovider -m gpu

# training images/s (1 rank x 2 threads vs 2 ranks x 1 thread) and evaluation time on 1 vs 2 ranks
scaling: setup
	$(PY) benchmarks/scaling.py
