# The two newcomer commands (see README): `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
GLUE_DIR ?= ../shared/data/glue

.PHONY: setup test quickstart lint

setup:
	bash scripts/setup_env.sh $(VENV)

test: setup
	$(PY) -m pytest -q tests

quickstart: setup
	bash scripts/quickstart.sh $(VENV) $(GLUE_DIR)

lint:
	$(VENV)/bin/ruff check fairseq_crild scripts tests
