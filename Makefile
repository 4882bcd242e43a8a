# Two commands on a fresh machine: `make demo` and `make test` (each sets up first).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LANDING ?= data/landing
WAREHOUSE ?= data/warehouse/sprx.duckdb
PATIENTS ?= 40000
PRACTICES ?= 10
SEED ?= 42
RELEASE ?= data/release
REPORT ?= data/report.html

.PHONY: setup system-packages demo test clean bench validate

setup: $(STAMP) system-packages

# The real-scheduler test runs PostgreSQL from Debian's packages, and the report test opens
# the report in Debian's headless Chromium; install them when missing.
system-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL server (Debian postgresql-15) for the Airflow integration test"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
		else echo "run as root, or: sudo apt-get install postgresql-15"; exit 1; fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "installing Chromium (Debian chromium) for the report rendering test"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "run as root, or: sudo apt-get install chromium"; exit 1; fi; \
	fi

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
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

clean:
	rm -rf $(VENV) data dbt_project/target dbt_project/logs

# `make bench`: time every stage at 100k and 1M patients against pandas and the scan floor,
# write benchmarks/results.json and the README's bench table (minutes; not part of `make test`).
SIZES ?= 100000 1000000
REPEATS ?= 1
bench: setup
	$(BIN)/python benchmarks/bench.py --sizes $(SIZES) --repeats $(REPEATS)

# `make validate`: bias and coverage of the effect estimate over many generated extracts with a
# known causal effect (docs/validation.md; about half an hour; not part of `make test`).
SEEDS ?= 25
EFFECTS ?= 1.0 0.8
validate: setup
	$(BIN)/python benchmarks/validate.py --seeds $(SEEDS) --effects $(EFFECTS)
