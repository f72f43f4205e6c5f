# Two commands do all the set-up on a fresh clone:
#   make quickstart   # install runtime deps, then vocab -> shards -> pretrain -> KorSTS fine-tune/eval, in runs/quickstart/
#   make test         # install test deps, then run the whole test suite
# Knobs: make quickstart STEPS=3000 OUT=runs/qs3k   (pretraining steps; default 1400 on CPU)
#        make quickstart BUDGET=8 OUT=runs/qs8      (minutes of pretraining instead; the default on GPU, 10)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build keeps CI small; on a GPU machine install a CUDA build of torch into $(VENV) first (see README).
TORCH_SPEC ?= torch==2.13.0
OUT ?= runs/quickstart
BUDGET ?=
STEPS ?=
PYTEST_ARGS ?=

.PHONY: quickstart test install install-dev clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.dev-installed

quickstart: $(VENV)/.installed
	$(PY) quickstart.py --output_dir $(OUT) $(if $(STEPS),--pretrain_steps $(STEPS)) $(if $(BUDGET),--budget_minutes $(BUDGET))

test: $(VENV)/.dev-installed
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
