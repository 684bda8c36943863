# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
VENV   := .venv
PYTHON ?= python3.11
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format bench bench-peers faults clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/run_workflow.py
	$(BIN)/python bench/scale.py

# Prefect 3 (installed into bench/peers/.venv-prefect on first run) beside us on the same
# three measures as bench/run_workflow.py: about 7 min.
bench-peers: $(STAMP)
	$(BIN)/python bench/peers/prefect.py

# Long fault runs (worker kills, broker and store outages, a burst, cancels): about 15 min.
faults: $(STAMP)
	$(BIN)/python bench/faults.py

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache .mypy_cache .ruff_cache *.egg-info
