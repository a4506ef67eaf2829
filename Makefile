# faultdrill — two commands do everything on a fresh Debian machine:
#   make demo   the main job: the smoke game day (faults, pages, runbooks that restore service)
#   make test   lint, type check and the whole test suite
# Both depend on `make setup`, which is idempotent: system packages (apt, when missing),
# a .venv with torch pinned to the CPU wheel, the project in editable mode, default models,
# and the MLServer venv of the bring-your-own-server examples (`make servers` adds KServe and Triton).

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

# Real third-party inference servers for experiments/examples/<server>/ (`target.service: {kind: process}`),
# each in its own venv under .faultdrill/servers/<server>/venv from its pinned requirements.txt (they pin
# versions that conflict with each other and with the project: never the project's .venv), plus the digits
# model trained into experiments/examples/<server>/models/digits/ by that venv (no torch anywhere).
SERVERS      := mlserver kserve triton
SERVERS_DIR  := .faultdrill/servers
EXAMPLES_DIR := experiments/examples

.PHONY: setup system-packages demo test test-catalog lint typecheck unit bench bench-faults bench-alerts clean \
	servers $(addprefix server-,$(SERVERS)) example

setup: $(STAMP) server-mlserver

servers: $(addprefix server-,$(SERVERS))

# server-mlserver, server-kserve, server-triton: the venv (rebuilt when its requirements change) and the model.
$(foreach s,$(SERVERS),$(eval server-$(s): $(SERVERS_DIR)/$(s)/venv/.installed $(EXAMPLES_DIR)/$(s)/models/digits/model.joblib))

$(SERVERS_DIR)/%/venv/.installed: $(EXAMPLES_DIR)/%/requirements.txt
	@echo "servers: building the $* venv in $(SERVERS_DIR)/$*/venv (log: $(SERVERS_DIR)/$*/pip.log)"
	@rm -rf $(SERVERS_DIR)/$*/venv && mkdir -p $(SERVERS_DIR)/$*
	@$(PYTHON) -m venv $(SERVERS_DIR)/$*/venv
	@$(SERVERS_DIR)/$*/venv/bin/python -m pip install -q --disable-pip-version-check -r $< \
	  > $(SERVERS_DIR)/$*/pip.log 2>&1 || { tail -30 $(SERVERS_DIR)/$*/pip.log; exit 1; }
	@touch $@

$(EXAMPLES_DIR)/%/models/digits/model.joblib: $(SERVERS_DIR)/%/venv/.installed $(EXAMPLES_DIR)/train_digits.py
	@$(SERVERS_DIR)/$*/venv/bin/python $(EXAMPLES_DIR)/train_digits.py $(@D)

# One example against its real server, started by faultdrill:
#   make example SPEC=experiments/examples/mlserver/process_kill.yaml
# (ARGS=--no-alerts …): faultdrill run SPEC, after the server venvs exist (the feature service of the dependency
# examples is started by faultdrill itself: its dependencies[].command).
SPEC ?=
ARGS ?=
example: setup servers
	@test -n "$(SPEC)" || { echo "usage: make example SPEC=experiments/examples/<server>/<experiment>.yaml [ARGS=...]"; exit 2; }
	$(BIN)/faultdrill run $(SPEC) $(ARGS)

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

test-catalog: setup servers
	$(BIN)/python -m pytest tests/integration -m catalog $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/target_bench.py

bench-faults: setup
	$(BIN)/python benchmarks/faults_bench.py

bench-alerts: setup
	$(BIN)/python benchmarks/alert_bench.py

clean:
	rm -rf $(VENV) .faultdrill .mypy_cache .ruff_cache .pytest_cache
	rm -f $(EXAMPLES_DIR)/*/models/*/model.joblib
