# The README's two commands: `make demo` runs the main job, `make test` the whole test suite.
# Both set up everything they need on a fresh machine (the venv here, the Kafka jars in
# ~/.cache/kafka-cqrs on first use); .ci/run installs the OS packages, then runs `make test`.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when the project's metadata changed since the last install.
INSTALLED := $(VENV)/.installed

.PHONY: demo test install up down status lint format clean

demo: install
	$(BIN)/cqrsctl up
	$(BIN)/cqrsctl smoke

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

up: install
	$(BIN)/cqrsctl up

down: install
	$(BIN)/cqrsctl down

status: install
	$(BIN)/cqrsctl status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
