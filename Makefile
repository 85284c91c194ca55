# Two entry points do all the set-up on a fresh machine:
#   make demo   - install, then apply the pretrained controller to a `final` held-out task (code_bow) against baselines
#   make test   - install, then run the test suite
#   make docs   - install, then serve the documentation site on http://127.0.0.1:8000
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
# the install environment: envs/cpu.txt (default) or envs/gpu.txt on a CUDA machine
REQS ?= envs/cpu.txt
# Material for MkDocs prints a banner about its successor on every build; the site does not need it
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test docs docs-build lint train evaluate bench

$(VENV)/.installed: $(REQS) envs/common.txt envs/docs.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r $(REQS)
	$(PIP) install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# the demo's task: code_bow, a `final` held-out family (python -m rlhpo.apply prints which split a task is from)
DEMO_TASK ?= code_bow
demo: install
	@echo "make demo: the shipped controller vs constant, cosine and the calibrated default on task $(DEMO_TASK) (compare the test loss)"
	$(PY) -m rlhpo.apply task=$(DEMO_TASK) compare=true

test: install
	$(PY) -m pytest -q

docs: install
	$(PY) -m mkdocs serve

# the site as CI builds it: every warning (a broken link, a missing page or docstring target) is an error
docs-build: install
	$(PY) -m mkdocs build --strict --site-dir site

lint: install
	$(VENV)/bin/ruff check .

train: install
	$(PY) -m rlhpo.train

evaluate: install
	$(PY) -m rlhpo.evaluate

bench: install
	$(PY) -m bench.env_overhead --family all
	$(PY) -m bench.controller_overhead
