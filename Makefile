# The two commands of the README: `make demo` (main job: a short real ranking run, then the
# free-score optimization demo) and `make test` (test suite).
# Both create a virtual environment in .venv on first use; only Python >= 3.10 and make are needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all bench venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m newton_losses demo --ranking
	$(PY) -m newton_losses demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not network" -q tests --doctest-modules src/newton_losses

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow or network" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m newton_losses bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
