# Two commands on a fresh machine: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/countersign serve

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy reads the folders as the package `countersign` through this link (see pyproject.toml).
typecheck: venv
	mkdir -p $(VENV)/mypy && ln -sfn ../.. $(VENV)/mypy/countersign
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest

test: lint typecheck unit

# Every benchmark in bench/, in a few minutes: serve end to end first (the figures
# docs/performance.md leads with), then the component ones as diagnostics. On a shared
# machine, one heavy run at a time (BENCH_LOCK); PostgreSQL set-ups need
# COUNTERSIGN_TEST_DATABASE_URL, IMAP needs Dovecot (each skipped, with a line, without).
BENCH_LOCK ?= /work/heavy.lock
BENCH_RUN = $(if $(wildcard $(dir $(BENCH_LOCK))),flock $(BENCH_LOCK)) $(BIN)/python
bench: venv
	$(BENCH_RUN) bench/serve_bench.py --replies 1000 --rounds 3
	$(BENCH_RUN) bench/imap_bench.py --replies 1000 --rounds 3
	$(BENCH_RUN) bench/mail_out_bench.py --notices 2000 --rounds 3
	$(BENCH_RUN) bench/mail_in_bench.py --replies 1000 --rounds 3 --paced 200
	$(BENCH_RUN) bench/reading_bench.py
	$(BENCH_RUN) bench/import_bench.py --lines 20000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
