# The two commands a user needs: `make stack` (local gateway, routing shown) and `make test` (whole suite).
# Both create .venv and install the project with everything it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: stack test lint bench-overhead clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

stack: $(STAMP)
	$(BIN)/endpoint-picker stack $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench-overhead: $(STAMP)
	$(BIN)/python -m benchmarks.overhead $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
