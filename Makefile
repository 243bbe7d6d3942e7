# Two commands a new user needs: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast bench lint clean browser

setup: $(STAMP)

# torch first (the CPU wheel), then everything else constrained to it: never -U.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,flower,tracking]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgefm demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# the report's browser test renders pages in Debian's chromium: installed here when missing
# (as root, with apt); elsewhere the test is skipped and says why
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "chromium is not installed: the report's browser test will be skipped"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.runtime_overhead
	$(BIN)/python -m benchmarks.client_memory
	$(BIN)/python -m benchmarks.lmaas
	$(BIN)/python -m benchmarks.aeria
	$(BIN)/python -m benchmarks.prince
	$(BIN)/python -m benchmarks.robustness
	$(BIN)/python -m benchmarks.flower_engine

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
