# bookpulse: every target installs into .venv first when needed.
# A fresh machine needs only python3 (>= 3.11) and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast lint bench bench-10m lock clean ui ui-check serve tracking-server

BOOKPULSE_HOME ?= data

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the locked set

demo: $(STAMP)  ## the whole job on the synthetic default: book, features, training, promotion, scoring
	$(BIN)/bookpulse demo

serve: $(STAMP)  ## the real-time API on 127.0.0.1:3000 (run make demo first)
	BOOKPULSE_HOME=$(BOOKPULSE_HOME) $(BIN)/bookpulse serve --port 3000

ui: $(STAMP)  ## MLflow UI on the home's embedded store (one worker; Ctrl-C stops it)
	BOOKPULSE_HOME=$(BOOKPULSE_HOME) $(BIN)/bookpulse ui --port 5000

ui-check: $(STAMP)  ## open make ui's pages in headless Chromium: screenshots under $(BOOKPULSE_HOME)/reports/ui
	$(BIN)/python benchmarks/ui_check.py --home $(BOOKPULSE_HOME)

tracking-server: $(STAMP)  ## the team's MLflow server: PostgreSQL, proxied artifacts, basic auth
	BOOKPULSE_HOME=$(BOOKPULSE_HOME) $(BIN)/bookpulse tracking-server --port 5000

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint  ## ruff, then the whole test suite
	$(BIN)/pytest -n 2 --dist loadfile -q

# the pure layers alone (specs, book, features, labels, model, the layer check): about a minute
FAST := tests/test_layers.py tests/specs tests/book/test_validate.py tests/book/test_publishing.py \
	tests/features tests/labels \
	tests/model tests/adapters/test_legacy_pyfunc.py

test-fast: lint  ## ruff, then the fast pure tests only
	$(BIN)/pytest -n 2 --dist loadfile -q $(FAST)

bench: $(STAMP)  ## benchmarks that print figures (books of 250,000 and 1,000,000 customers)
	$(BIN)/python benchmarks/generate_book.py
	$(BIN)/python benchmarks/build_features.py
	$(BIN)/python benchmarks/train_models.py
	$(BIN)/python benchmarks/score_book.py --home $(BOOKPULSE_HOME) \
		--customers 250000,1000000 --spark 'local[2]'
	$(BIN)/python benchmarks/online_store.py
	$(BIN)/python benchmarks/api_latency.py --home $(BOOKPULSE_HOME)

bench-10m: $(STAMP)  ## bank scale: generate 10,000,000 customers x 24 months, then score them (about 25 min, 12 GB of disk)
	$(BIN)/python benchmarks/generate_book.py --customers 10000000 --out $(BOOKPULSE_HOME)/book_10m
	$(BIN)/python benchmarks/score_book.py --home $(BOOKPULSE_HOME) --book $(BOOKPULSE_HOME)/book_10m --no-floor

lock: ## re-resolve dependencies from pyproject.toml and rewrite requirements.lock
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	.venv-lock/bin/python -m pip freeze --exclude-editable --all | grep -v -E "^(pip|bookpulse)==" > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
