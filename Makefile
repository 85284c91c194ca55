# Two entry points do all the set-up on a fresh machine:
#   make demo   - install, then apply the pretrained controller to a held-out task against baselines
#   make test   - install, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
# the install environment: envs/cpu.txt (default) or envs/gpu.txt on a CUDA machine
REQS ?= envs/cpu.txt

.PHONY: install demo test train evaluate bench

$(VENV)/.installed: $(REQS) envs/common.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r $(REQS)
	$(PIP) install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m rlhpo.apply compare=true

test: install
	$(PY) -m pytest -q

train: install
	$(PY) -m rlhpo.train

evaluate: install
	$(PY) -m rlhpo.evaluate

bench: install
	$(PY) -m rlhpo.bench.env_overhead --family all
	$(PY) -m rlhpo.bench.controller_overhead
