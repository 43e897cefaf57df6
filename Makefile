# querylift: `make demo` runs the whole pipeline on embedded infrastructure; `make test` runs the tests.
# Both create .venv and install everything they need on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-10)

.PHONY: prometheus chromium screenshots install demo test test-fast lint schemas bench-accuracy bench-pipeline bench-training bench-broker clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	@# llama-cpp-python compiles for ~7 minutes once; pip keeps the built wheel in its cache afterwards.
	$(PIP) install -q -e '.[ml,dev]'
	@touch $@

# Prometheus (Debian package) for the scrape test; skipped quietly where apt is not ours to use.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get -qq update >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get -qq install -y prometheus >/dev/null 2>&1) \
	  || echo "prometheus not installed: its scrape test will be skipped"; }

# Debian's chromium for the console's browser test (driven by playwright; `playwright install` is never run);
# where apt is not ours to use, the test is skipped with one line saying so.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get -qq update >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get -qq install -y chromium >/dev/null 2>&1) \
	  || echo "chromium not installed: the console's browser test will be skipped"; }

demo: install
	$(VENV)/bin/querylift demo

test: install prometheus chromium
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -p no:cacheprovider --durations=15

test-fast: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -m "not slow and not real_model"

# Rewrites docs/screenshots/ (linked from the README) from the console's browser test.
screenshots: install chromium
	QUERYLIFT_SCREENSHOTS=docs/screenshots HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_try_it_yourself.py

lint: install
	$(VENV)/bin/ruff check events services bench tests
	$(VENV)/bin/mypy

schemas: install
	$(VENV)/bin/querylift schemas export --out schemas

bench-accuracy: install
	$(VENV)/bin/querylift bench accuracy --data ../shared/bench/projects --out bench/results/accuracy.json --limit 100 \
	  --strategies baseline prompt rag fewshot repair template lora full --lora-max-steps 40

bench-pipeline: install
	$(VENV)/bin/querylift bench pipeline --questions 4000 --rate 200 --out bench/results/pipeline.json

bench-training: install
	$(PY) -m bench.training_bench

bench-broker: install
	$(PY) -m bench.broker_costs --out bench/results/broker_costs.json

clean:
	rm -rf $(VENV) .querylift .pytest_cache .mypy_cache .ruff_cache
