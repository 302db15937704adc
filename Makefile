# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project from pyproject.toml first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck up sandbox clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dispatch demo $(if $(ONCE),--once) $(if $(FIRM),--firm $(FIRM)) $(if $(BATCH_WINDOW),--batch-window $(BATCH_WINDOW)) $(if $(WORKERS),--workers $(WORKERS))

up: $(STAMP)
	$(BIN)/dispatch up $(if $(FIRM),--firm $(FIRM)) $(if $(WORKERS),--workers $(WORKERS))

sandbox: $(STAMP)
	$(BIN)/dispatch sandbox

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest $(PYTEST_ARGS)

# The board's browser test drives Debian's Chromium (never a browser downloaded by a tool).
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy app dispatch workflows activities sandbox simulation benchmarks worker.py starter.py tests

clean:
	rm -rf $(VENV) .data build *.egg-info
