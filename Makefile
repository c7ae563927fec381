# The two commands: `make run` and `make test`. Both first run the idempotent set-up.
VENV ?= .venv
BIN := $(VENV)/bin
export TCP_NODELAY := 1

.PHONY: setup run test lint bench clean

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/pacslabel up --demo

test: setup lint
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check service tests bench

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf var/pacslabel.db var/spool var/quarantine var/orthanc var/demo
