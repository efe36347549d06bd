# The two commands a user needs: `make stack` (local gateway, routing shown) and `make test` (whole suite).
# Both create .venv and install the project with everything it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# buf (lints protos/ with buf.yaml) comes from the npm registry into .tools/; tests/unit/api reads this pin.
BUF_VERSION := 1.75.0

.PHONY: stack test lint bench bench-overhead image-check clean

# The install also generates the gRPC stubs of protos/ (setup.py), so it reruns when a .proto changes.
$(STAMP): pyproject.toml setup.py $(wildcard protos/*/*/*.proto)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	if command -v npm >/dev/null; then npm install --prefix .tools --no-audit --no-fund --loglevel=error \
		@bufbuild/buf@$(BUF_VERSION); else echo "npm not found: the buf lint test will skip"; fi
	touch $(STAMP)

stack: $(STAMP)
	$(BIN)/endpoint-picker stack $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

# The Dockerfile's install steps in clean virtualenvs (no container engine here): wheel, --no-index install,
# entrypoint runs, no dev packages. About 30-50 s.
image-check: $(STAMP)
	$(BIN)/python scripts/check_image_install.py

lint: $(STAMP)
	$(BIN)/ruff check .

# The routing comparison of docs/benchmarks.md (round robin, this picker, sglang-router, vllm-router; about
# 12 minutes; peer routers are installed into .bench/peers on first use). `make bench ARGS="fleet"` and
# `ARGS="overhead"` run the other two benchmarks.
bench: $(STAMP)
	$(BIN)/endpoint-picker bench $(ARGS)

bench-overhead: $(STAMP)
	$(BIN)/python -m benchmarks.overhead $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
