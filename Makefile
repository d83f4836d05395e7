# One command per habit. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint audit bench bench-full serve migrate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Patron needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## install, create the database, load demo data, serve on :8000
	$(BIN)/patron demo

test: $(STAMP)  ## the whole test suite, on SQLite and PostgreSQL
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

audit: $(STAMP)  ## known vulnerabilities in the installed dependencies (pip-audit)
	$(BIN)/python tools/dependency_audit.py

bench: $(STAMP)  ## figures with their anchors, at a size that runs in minutes
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.search_scale
	$(BIN)/python -m benchmarks.segments

bench-full: $(STAMP)  ## the README's figures: ~1M orders; analytics on 1M customers / ~4M orders
	$(BIN)/python -m benchmarks --orders 1000000 --analytics-customers 1000000
	$(BIN)/python -m benchmarks.search_scale --customers 1000000
	$(BIN)/python -m benchmarks.segments --customers 1000000

serve: $(STAMP)
	$(BIN)/patron serve

migrate: $(STAMP)
	$(BIN)/patron db upgrade

clean:
	rm -rf $(VENV) var
