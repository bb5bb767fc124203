# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-embedded test-servers lint install clean browser fonts

# Test processes side by side (pytest-xdist): most tests wait on worker processes and
# databases rather than compute. 3 was the quickest on a 2-core machine (README, Tests).
TEST_WORKERS ?= 3
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist worksteal --durations=25

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) fonts

## Run the whole stack on the embedded backends at http://localhost:8000
run: $(STAMP) fonts
	$(BIN)/aidlink migrate
	$(BIN)/aidlink demo load
	rm -rf $${AIDLINK_VAR_DIR:-var}/metrics  # counters of an earlier run
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

## Run the test suite on the embedded backends, then again on PostgreSQL and Redis
## when AIDLINK_TEST_POSTGRES_URL and AIDLINK_TEST_REDIS_URL are set.
test: $(STAMP) browser fonts
	MAKE="$(MAKE)" scripts/test-phases

## The edit-test loop: unit and property tests only, no services (well under a minute)
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit -m "not backend and not embedded" -n 2 --durations=10 $(PYTEST_ARGS)

## Debian's Chromium (and a CJK font for readable screenshots) for the browser tests,
## when it is missing and this user may install packages.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			echo "== installing Debian's chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei; \
		else \
			echo "== /usr/bin/chromium is missing: install Debian's chromium to run the browser tests"; \
		fi; \
	fi

## A font with Chinese characters for printed waybills and run sheets (WenQuanYi Micro
## Hei, Debian's fonts-wqy-microhei), when it is missing and this user may install
## packages; AIDLINK_PDF_FONT may name another TrueType font instead.
WQY_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
fonts:
	@if [ -z "$$AIDLINK_PDF_FONT" ] && [ ! -f $(WQY_FONT) ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			echo "== installing Debian's fonts-wqy-microhei for printed documents"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei; \
		else \
			echo "== $(WQY_FONT) is missing: install Debian's fonts-wqy-microhei (or set AIDLINK_PDF_FONT) to print"; \
		fi; \
	fi

## Fuzz the API harder than the suite does: a fresh random seed each run (printed, so a
## finding can be replayed with FUZZ_SEED=...) and FUZZ_EXAMPLES requests per operation.
FUZZ_EXAMPLES ?= 40
fuzz: $(STAMP)
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "== fuzzing with seed $$seed ($(FUZZ_EXAMPLES) examples per operation); replay: make fuzz FUZZ_SEED=$$seed"; \
	AIDLINK_FUZZ_SEED=$$seed AIDLINK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(BIN)/pytest tests/hostile/test_openapi_fuzz.py -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tests $(wildcard bench)

test-embedded: $(STAMP)
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-servers: $(STAMP)
	@if [ -n "$$AIDLINK_TEST_POSTGRES_URL" ] && [ -n "$$AIDLINK_TEST_REDIS_URL" ]; then \
		echo "== again on PostgreSQL ($$AIDLINK_TEST_POSTGRES_URL) and Redis ($$AIDLINK_TEST_REDIS_URL)"; \
		AIDLINK_TEST_BACKEND=servers $(BIN)/pytest -m backend $(PYTEST_PARALLEL) $(PYTEST_ARGS); \
	else \
		echo "== AIDLINK_TEST_POSTGRES_URL / AIDLINK_TEST_REDIS_URL not set: embedded backends only"; \
	fi

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
