# Two entry points: `make demo` (the main job) and `make test` (every test).
# Both install what they need into .venv from pinned versions.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,runtime

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m serflow.demo

test: $(STAMP)
	$(BIN)/ruff check operator images tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check operator images tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
