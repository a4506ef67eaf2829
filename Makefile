# faultdrill — two commands do everything on a fresh Debian machine:
#   make demo   the main job: the smoke game day (faults, pages, runbooks that restore service)
#   make test   lint, type check and the whole test suite
# Both depend on `make setup`, which is idempotent: system packages (apt, when missing),
# a .venv with torch pinned to the CPU wheel, the project in editable mode, default models.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.faultdrill-setup
# Debian packages the project starts or drives for real.
APT_PACKAGES := prometheus prometheus-alertmanager faketime iptables iproute2 wrk chromium redis-server
TORCH  := torch==2.13.0
PYTEST_ARGS ?=
# make test runs on both cores (pytest-xdist); whole-system runs stay one at a time (tests/conftest.py).
PYTEST_WORKERS ?= 2
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: setup system-packages demo test test-catalog lint typecheck unit bench bench-faults bench-alerts clean

setup: $(STAMP)

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The CPU wheel first: a plain `torch` requirement would pull a multi-GB CUDA build.
	@echo "setup: installing Python packages into $(VENV) (log: $(VENV)/pip.log)"
	@$(PIP) --upgrade pip > $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; exit 1; }
	@$(PIP) "$(TORCH)" >> $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; exit 1; }
	@$(PIP) -e ".[dev]" >> $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; exit 1; }
	@$(BIN)/python -c "import torch, faultdrill.target_service; print('setup: torch', torch.__version__)"
	@$(BIN)/faultdrill target train
	@touch $@

demo: setup
	$(BIN)/faultdrill gameday run gamedays/plans/smoke.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test: setup lint typecheck
	$(BIN)/python -m pytest tests -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-catalog: setup
	$(BIN)/python -m pytest tests/integration -m catalog $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/target_bench.py

bench-faults: setup
	$(BIN)/python benchmarks/faults_bench.py

bench-alerts: setup
	$(BIN)/python benchmarks/alert_bench.py

clean:
	rm -rf $(VENV) .faultdrill .mypy_cache .ruff_cache .pytest_cache
