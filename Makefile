# Two commands on a fresh machine: `make demo` and `make test` (each sets up first).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
LIGHT := $(VENV)/.installed-light
FULL := $(VENV)/.installed-full
LINT_TOOLS := $(VENV)/.installed-lint
LANDING ?= data/landing
WAREHOUSE ?= data/warehouse/sprx.duckdb
PATIENTS ?= 40000
PRACTICES ?= 10
SEED ?= 42
RELEASE ?= data/release
REPORT ?= data/report.html
# CI's second interpreter: the newest Python these machines have (see docs/operations.md, Tests).
NEWEST_PYTHON ?= $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13))
NEWEST_VENV ?= .venv-newest
NEWEST_TESTS ?= tests/test_install.py tests/test_linkage.py tests/test_cli.py tests/test_quality.py tests/test_results.py tests/test_ingest.py tests/test_dags.py::test_a_refused_delivery_fails_only_its_own_mapped_task

.PHONY: setup setup-light data-docs-assets system-packages demo test test-newest-python lint docs clean bench validate

# The full set, for `make test`: the light install plus Airflow, Cosmos, the PostgreSQL
# provider, the Spark engine (dbt-spark, PySpark) and the test tools, and the Debian packages
# the tests drive.
setup: $(FULL) data-docs-assets system-packages

# What `make demo` needs: the light install (no Airflow) and the Data Docs assets.
setup-light: $(LIGHT) data-docs-assets

# The real-scheduler test runs PostgreSQL from Debian's packages, and the report and Data Docs
# tests open pages in Debian's headless Chromium; install them when missing.
system-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL server (Debian postgresql-15) for the Airflow integration test"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
		else echo "run as root, or: sudo apt-get install postgresql-15"; exit 1; fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "installing Chromium (Debian chromium) for the report and Data Docs rendering tests"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "run as root, or: sudo apt-get install chromium"; exit 1; fi; \
	fi
	@if ! command -v java >/dev/null 2>&1 && [ -z "$$JAVA_HOME" ]; then \
		echo "installing Java 17 (Debian openjdk-17-jre-headless) for the Spark engine's tests"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
		else echo "run as root, or: sudo apt-get install openjdk-17-jre-headless"; exit 1; fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"

# requirements.lock pins both sets; as a constraints file it pins whichever set is asked for.
$(LIGHT): requirements.lock pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock --no-build-isolation -e .
	touch $@

$(FULL): requirements.lock pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock --no-build-isolation -e ".[airflow,test,spark,lint]"
	touch $@ $(LIGHT) $(LINT_TOOLS)

# What `make lint` needs: the light install (dbt for `dbt parse` and the templater) and the
# lint tools; no Airflow, Spark or test tools.
$(LINT_TOOLS): requirements.lock pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock --no-build-isolation -e ".[lint]"
	touch $@ $(LIGHT)

# The files GX Data Docs load from CDNs, as pinned npm tarballs (vendor/data-docs/); without
# npm the Data Docs still build, loading them from the CDNs.
data-docs-assets: | $(LIGHT)
	@mkdir -p vendor/data-docs  # the image copies it, fetched or not
	@if command -v npm >/dev/null 2>&1; then $(BIN)/python -m sprx_pipeline.data_docs fetch; \
	else echo "npm not found: the Data Docs will load their styles from CDNs (install Node.js and npm for offline Data Docs)"; fi

demo: setup-light
	rm -rf $(LANDING)
	$(BIN)/sprx generate --out $(LANDING) --patients $(PATIENTS) --practices $(PRACTICES) --seed $(SEED)
	$(BIN)/sprx run --landing $(LANDING) --warehouse $(WAREHOUSE)
	$(BIN)/sprx release --warehouse $(WAREHOUSE) --out $(RELEASE)
	$(BIN)/sprx report --release $(RELEASE) --out $(REPORT)

# Files in collection order, not most-tests-first: the two longest files (the real-scheduler
# test and the compose test, one test file each of a few to ten tests) then start early and on
# different workers instead of one after the other at the end.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# `make lint`: ruff (check and format) for Python; `dbt parse` for the project; sqlfluff with the
# dbt templater for the models and singular tests (.sqlfluff says which rules and why); and that
# docs/methods.md's tables of the study are what the declaration generates (`make docs`). It parses
# into a scratch target folder, so it never touches a build's artefacts or a warehouse.
LINT_DBT := SPRX_DUCKDB_PATH=$(CURDIR)/.cache/lint/lint.duckdb DBT_TARGET_PATH=$(CURDIR)/.cache/lint/target DBT_LOG_PATH=$(CURDIR)/.cache/lint/logs
lint: $(LINT_TOOLS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@mkdir -p .cache/lint
	cd dbt_project && $(LINT_DBT) ../$(BIN)/dbt parse --quiet --profiles-dir . --project-dir .
	$(LINT_DBT) $(BIN)/sqlfluff lint dbt_project/models
	$(BIN)/python -m sprx_pipeline.study_docs --check

# `make docs`: rewrite docs/methods.md's tables of the declared study from dbt_project.yml's vars.
docs: $(LIGHT)
	$(BIN)/python -m sprx_pipeline.study_docs

# CI's run on the newest Python: the full set installed from the same lock into its own venv,
# then the tests that cover the light install, ingest, dbt, the quality gate, the results and
# the DAGs (the whole suite runs on 3.11; see docs/operations.md, Tests).
test-newest-python:
	@test -n "$(NEWEST_PYTHON)" || { echo "no python3.13 found: install it (pyenv install 3.13) or set NEWEST_PYTHON"; exit 1; }
	$(MAKE) setup PYTHON=$(NEWEST_PYTHON) VENV=$(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pytest -n 2 --dist loadfile $(NEWEST_TESTS)

clean:
	rm -rf $(VENV) $(NEWEST_VENV) .cache vendor build data dbt_project/target dbt_project/logs

# `make bench`: time every stage at 1M and 4M patients (medians of three runs) against pandas
# and the scan floor; write benchmarks/results.json and docs/performance.md (an hour or more;
# not part of `make test`). The Spark engine beside DuckDB, at a size Spark's local mode
# finishes here: `make bench ENGINES="duckdb spark" SIZES=100000 REPEATS=1` (docs/spark.md).
SIZES ?= 1000000 4000000
REPEATS ?= 3
ENGINES ?= duckdb
bench: setup
	$(BIN)/python benchmarks/bench.py --sizes $(SIZES) --repeats $(REPEATS) --engines $(ENGINES)

# `make validate`: bias and coverage of the effect estimate over many generated extracts with a
# known causal effect (docs/validation.md; about half an hour; not part of `make test`).
SEEDS ?= 25
EFFECTS ?= 1.0 0.8
validate: setup
	$(BIN)/python benchmarks/validate.py --seeds $(SEEDS) --effects $(EFFECTS)
