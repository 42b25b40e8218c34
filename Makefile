# InfraFabric: `make demo` and `make test` are all a newcomer needs.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit install runtime clean

# the runtime alone: what `pip install infrafabric` gives a user, and all the demo needs
runtime:
	@scripts/bootstrap.sh

# the runtime and every development tool (the `dev` extra): what the tests need
install:
	@scripts/bootstrap.sh dev

demo: runtime
	$(BIN)/ifctl demo

test: install
	@scripts/system-deps.sh
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -x -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info
