# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/sample

.PHONY: install demo test lint clean

$(BIN)/revsat: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(BIN)/revsat

install: $(BIN)/revsat

demo: install
	$(BIN)/revsat score data/sample/reviews.csv --out $(OUT) --run-date 2026-11-14

test: install
	$(BIN)/ruff check pipeline flows revsat tests
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check pipeline flows revsat tests

clean:
	rm -rf $(VENV) out .pytest_cache
