# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-embedded test-servers lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole stack on the embedded backends at http://localhost:8000
run: $(STAMP)
	$(BIN)/aidlink migrate
	$(BIN)/aidlink demo load
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

## Run the test suite on the embedded backends, then again on PostgreSQL and Redis
## when AIDLINK_TEST_POSTGRES_URL and AIDLINK_TEST_REDIS_URL are set.
test: $(STAMP) lint test-embedded test-servers

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tests $(wildcard bench)

test-embedded: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test-servers: $(STAMP)
	@if [ -n "$$AIDLINK_TEST_POSTGRES_URL" ] && [ -n "$$AIDLINK_TEST_REDIS_URL" ]; then \
		echo "== again on PostgreSQL ($$AIDLINK_TEST_POSTGRES_URL) and Redis ($$AIDLINK_TEST_REDIS_URL)"; \
		AIDLINK_TEST_BACKEND=servers $(BIN)/pytest $(PYTEST_ARGS); \
	else \
		echo "== AIDLINK_TEST_POSTGRES_URL / AIDLINK_TEST_REDIS_URL not set: embedded backends only"; \
	fi

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
