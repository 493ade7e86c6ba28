# Two entry points for a fresh machine with Python 3.11, Java 17 and Maven:
#   make demo   set up, then run the end-to-end demo (local Kafka + local exchange)
#   make test   set up, then run linters and the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test setup setup-test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed
	$(PY) -m connector.dev.kafka_broker fetch

setup-test: setup
	$(PY) -m connector.dev.schema_registry fetch
	bash scripts/install_test_tools.sh

demo: setup
	$(PY) scripts/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check connector tests scripts
	$(VENV)/bin/mypy connector

# The whole suite on $(WORKERS) workers (most long tests wait rather than compute, so
# they overlap well on 2 cores), a test file per unit of work, longest folders first
# (tests/conftest.py). `pytest -q` alone runs the same tests one after the other.
WORKERS ?= 3
test: setup-test lint
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

# Both Kafka clients; the raw ceilings only where the connector runs flat out (a).
bench: setup
	$(PY) scripts/bench.py --scenarios a --client kafka-python,confluent-kafka \
		--headers full,minimal --out bench-results/trades
	$(PY) scripts/bench.py --scenarios b,c,d --contenders connector,naive \
		--client kafka-python,confluent-kafka --out bench-results/others

clean:
	rm -rf $(VENV) .cache build *.egg-info
