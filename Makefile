# The README's two commands: `make demo` runs the main job, `make test` the whole test suite.
# Both set up everything they need on a fresh machine (the venv here, the Kafka jars, and for
# the tests Avro's Java library, in ~/.cache/kafka-cqrs on first use); .ci/run installs the OS
# packages, then runs `make test`.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when the project's metadata changed since the last install.
INSTALLED := $(VENV)/.installed

.PHONY: demo bench test install install-bench up down status lint format clean

# `cqrsctl demo` brings the local stack up itself (first run: the Kafka jars via Maven).
demo: install
	$(BIN)/cqrsctl demo

# Ours and the eventsourcing peer side by side (docs/benchmarks.md); BENCH_ARGS for sizes,
# e.g. make bench BENCH_ARGS="--accounts 200 --commands 20000".
bench: install-bench
	$(BIN)/cqrsctl up
	$(BIN)/python -m bench $(BENCH_ARGS)

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

install: $(INSTALLED)

install-bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,charts,bench]' -e contexts/bank -e contexts/shop

# The runtime and the reference contexts (contexts/bank and contexts/shop, packages of their own).
$(INSTALLED): pyproject.toml contexts/bank/pyproject.toml contexts/shop/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,charts]' -e contexts/bank -e contexts/shop
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
