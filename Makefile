# The product's front door. `make run` installs what is missing and starts the app; `make test` installs what
# the tests need (Python packages, Debian chromium), checks the code with ruff (`make lint`) and runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# Loopback only unless told otherwise (`make run ADDRESS=0.0.0.0`): open mode has no sign-in.
ADDRESS ?= 127.0.0.1
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test install browser lint clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . || $(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: install
	$(PY) -m renal_ldm db upgrade
	$(PY) -m streamlit run app/main.py --server.address $(ADDRESS) --server.port $(PORT) --server.headless true \
	  --browser.gatherUsageStats false --server.maxUploadSize $${RENAL_LDM_MAX_UPLOAD_MB:-20}

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
