# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest install install-dev migrate seed clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

run: seed
	@$(BIN)/python manage.py welcome --host $(HOST) --port $(PORT)
	$(BIN)/uvicorn companion.asgi:application --host $(HOST) --port $(PORT) --ws websockets-sansio --log-level warning

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy .

pytest: install-dev
	$(BIN)/pytest

test: lint typecheck pytest

bench: install-dev
	$(BIN)/python -m bench.intents
	$(BIN)/python -m bench.memory

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
