# Two set-up commands: `make demo` and `make test`. Both create .venv and install everything pinned.
# `make test-lerobot` builds a second environment, .venv-lerobot, with LeRobot and its own torch (see README).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-slow test-lerobot install browser

# The client (client/, its own distribution sigma-vla-client) goes in the same pip command as the main package,
# which depends on it; the simulator is the `sim` extra.
$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ./client -e '.[sim,test]'
	touch $(STAMP)

install: $(STAMP)

# The report's browser test renders in Debian's chromium (the test set-up installs it when missing).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "chromium unavailable: the browser test is skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

demo: $(STAMP)
	$(BIN)/sigma demo --out demo_out

# LeRobot beside sigma-vla: Python 3.12, lerobot 0.6.1 with its own torch (not our constraints.txt), built once
# (a 5 GB environment, a few minutes of downloads); the stamp rebuilds it only when a pyproject.toml changes.
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
LEROBOT ?= lerobot[pi,smolvla,diffusion]==0.6.1
LR_VENV := .venv-lerobot
LR_STAMP := $(LR_VENV)/.installed

$(LR_STAMP): pyproject.toml client/pyproject.toml
	@test -n "$(PY312)" || (echo "make test-lerobot needs Python 3.12 (python3.12 on PATH, or PY312=...)"; exit 2)
	test -x $(LR_VENV)/bin/python || $(PY312) -m venv $(LR_VENV)
	$(LR_VENV)/bin/pip install --quiet --upgrade pip
	$(LR_VENV)/bin/pip install --quiet '$(LEROBOT)' -e ./client -e '.[sim,test]'
	touch $(LR_STAMP)

test-lerobot: $(LR_STAMP)
	$(LR_VENV)/bin/python -m pytest tests/lerobot -m lerobot
