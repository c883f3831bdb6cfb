# The README's two commands: `make demo` and `make test`. Each creates .venv and
# installs what is missing (a stamp file makes the second run instant).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser demo test faults journeys lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reclaim demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The Web UI test drives Debian's chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: lint browser
	$(BIN)/pytest -q --durations=15

# The fault tests that take minutes each (worker kill -9, dev server restart, PostgreSQL
# outage, throttling, clean exits) and the long journeys (real processes, a browser, the demo,
# the README walked through, plans across 40 accounts); pyproject keeps both out of `make test`,
# so it stays under 15 minutes on a loaded machine. .ci/run runs both.
faults: $(STAMP) browser
	$(BIN)/pytest -q --durations=15 tests/faults tests/journeys

journeys: $(STAMP) browser
	$(BIN)/pytest -q --durations=15 tests/journeys

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .reclaim .pytest_cache .mypy_cache .ruff_cache
