# The two commands of the README: `make demo` (main job: a short real ranking run, then the
# free-score optimization demo) and `make test` (test suite).
# Both create a virtual environment in .venv on first use; only Python >= 3.10 and make are needed.
# The venv holds the library with its [pyepo] extra (so the PyEPO integration tests run) and its
# [docs] extra (tests/test_docs.py builds the site), the harness and the test dependencies.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all bench study results venv docs clean

$(STAMP): pyproject.toml lab/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[pyepo,docs]" -e "./lab[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m newton_lab demo --ranking
	$(PY) -m newton_lab demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not network" -q tests --doctest-modules src/newton_losses src/newton_lab

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow or network" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# The documentation site (mkdocs.yml, docs/DOCS.md): static HTML in site/, built offline and
# strictly (a warning is an error). A venv made before the [docs] extra existed gets it here.
docs: $(STAMP)
	@$(PY) -c "import mkdocs, material, mkdocstrings_handlers.python, black, mathjax" 2>/dev/null || \
	  $(PY) -m pip install --quiet -c constraints.txt -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) -m newton_lab bench

# The reproduction study (issue 8, RESULTS.md): every sweep of configs/study in order, then the
# page. Resumable: finished runs are skipped, interrupted ones resume from their checkpoint, so
# `make study` can be stopped and restarted at will. Hours of CPU time; WORKERS=k overrides the
# configs' 2 worker processes (one torch thread each).
STUDY := table_neuralsort_n5 lambda_ablation shortest_path sensitivity controls \
         table_settings table_n5_methods table_gauss_newton controls_float64 table_n10 \
         controls_float64_n10 gn_lambda10 exact_loss shortest_path_seeds pto_shortest_path pto_gn_lambda_edge \
         pto_shortest_path_mlp pto_knapsack

study: $(STAMP)
	for c in $(STUDY); do \
	  OMP_NUM_THREADS=1 $(PY) -m newton_lab sweep configs/study/$$c.json --no-report \
	    $(if $(WORKERS),--workers $(WORKERS)) || exit 1; \
	done
	$(MAKE) results

# Regenerate RESULTS.md (and docs/results/) from the committed runs, without training.
# The runs of RESULTS §2's table: exactly those its sweep files define (settings chosen on validation).
TABLE := configs/study/table_neuralsort_n5.json configs/study/table_n5_methods.json \
         configs/study/table_gauss_newton.json configs/study/table_n10.json

# The float64-loss control (RESULTS §2) beside the float32 baselines and NL-Fisher rows it tests.
FLOAT64 := configs/study/controls_float64.json \
           'results/study/table/ranking-neuralsort-n5-none-*' 'results/study/table/ranking-neuralsort-n5-fisher-lam0.1b-*' \
           'results/study/table/ranking-softsort-n5-none-*' 'results/study/table/ranking-softsort-n5-fisher-lam0.1b-*' \
           'results/study/table/ranking-odd_even-n5-none-*' 'results/study/table/ranking-odd_even-n5-fisher-lam0.1b-*'
# The same control at n = 10, beside the float32 n = 10 baselines and Newton rows (table_n10.json).
FLOAT64_N10 := configs/study/controls_float64_n10.json configs/study/table_n10.json

# RESULTS §4's quoted shortest-path cells on 10 seeds: seeds 0-2 (a view of the first sweep) and 3-9.
SP_SEEDS := configs/study/shortest_path_quoted_cells.json configs/study/shortest_path_seeds.json

results: $(STAMP)
	$(PY) scripts/grad_norms.py results/study/controls/*/ --out results/study/analysis/grad_norms_controls.md
	$(PY) scripts/grad_norms.py --by-row $(TABLE) --out results/study/analysis/grad_norms_table.md
	$(PY) scripts/choose_settings.py 'results/study/table/ranking-softsort-n5-*-s0-*' \
	  'results/study/table/ranking-odd_even-n5-*-s0-*' 'results/study/table/ranking-neuralsort-n5-gauss_newton-*-s0-*' \
	  'results/study/sensitivity/ranking-neuralsort-n5-gauss_newton-lam0.*b-s0-*' \
	  --grid fisher=0.01,0.1,1 --grid hessian_batch=0.01,0.1,1 --grid gauss_newton=1,10 \
	  --out results/study/analysis/settings_n5.md
	$(PY) scripts/stability.py $(TABLE) --out results/study/analysis/stability_table.md
	$(PY) scripts/grad_norms.py --by-row $(FLOAT64) --out results/study/analysis/grad_norms_float64.md
	$(PY) scripts/stability.py $(FLOAT64) --out results/study/analysis/stability_float64.md
	$(PY) scripts/grad_norms.py --by-row $(FLOAT64_N10) --out results/study/analysis/grad_norms_float64_n10.md
	$(PY) scripts/stability.py $(FLOAT64_N10) --out results/study/analysis/stability_float64_n10.md
	$(PY) scripts/seed_split.py $(SP_SEEDS) --out results/study/analysis/seed_split_shortest_path.md
	$(PY) scripts/pto_tables.py configs/study/pto_shortest_path.json --out results/study/analysis/pto_shortest_path.md
	$(PY) scripts/pto_tables.py configs/study/pto_gn_lambda_edge.json --out results/study/analysis/pto_gn_lambda_edge.md
	$(PY) scripts/pto_tables.py configs/study/pto_shortest_path_mlp.json --out results/study/analysis/pto_shortest_path_mlp.md
	$(PY) scripts/pto_tables.py configs/study/pto_knapsack.json --out results/study/analysis/pto_knapsack.md
	$(PY) -m newton_lab report --template docs/RESULTS.template.md --results RESULTS.md

clean:
	rm -rf $(VENV) build dist lab/build src/*.egg-info .pytest_cache .hypothesis site
