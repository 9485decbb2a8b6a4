# backchannel: `make sim` and `make test` are the two commands (`make test-fast` for the
# edit-test loop); each sets up .venv on first use. Firmware paths are built in one place,
# tools/lab/runner.py.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENARIO ?= tools/sim/scenarios/normal.json
TRANSPORT ?= http
SIM_PORT ?= 8580
UPDATE_KEY ?=
FAULTS_TRANSPORT ?= both
PREFIX ?= $(HOME)/.local
PYTEST := $(BIN)/python -m pytest -q

.PHONY: venv install sim test test-fast lint e2e faults bench heap-budget soak soak-http soak-https soak-mqtt soak-xmpp soak-email deploy hil clean

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

# ...plus the micropython-lib modules the firmware imports (umqtt.simple, pinned, hashed):
# a hash check when present, a download only when missing or damaged.
# ...and the "board" interpreter (32-bit, float32 MicroPython: tools/lab/board_build.py),
# built once into .venv/board-micropython from ../shared/vendor/micropython-src.tgz or
# $(MICROPYTHON_SRC) (a checkout of your own); without either its tests skip.
# ...and the dashboard's uPlot (npm ci of tools/headend/dashboard/package-lock.json, checked
# by sha256, into .venv/share/backchannel-dashboard; without npm only the plots are missing).
venv: $(VENV)/.installed
	@$(BIN)/python -m lab.mplib
	@$(BIN)/python -m headend.dashboard.assets
	@$(BIN)/python -m lab.board_build --if-source >/dev/null

# `backchannel` on your PATH: links the venv's command into $(PREFIX)/bin (~/.local/bin).
install: venv
	@mkdir -p $(PREFIX)/bin
	ln -sf $(CURDIR)/tools/backchannel $(PREFIX)/bin/backchannel
	ln -sf $(CURDIR)/tools/replay $(PREFIX)/bin/backchannel-replay
	@echo "installed: $(PREFIX)/bin/backchannel and backchannel-replay"

# make sim [SCENARIO=...] [TRANSPORT=mqtt] [SIM_PORT=8580] [UPDATE_KEY=keys/release-key.pub]
sim: venv
	$(BIN)/python -m sim --transport $(TRANSPORT) --state .sim --port $(SIM_PORT) $(if $(UPDATE_KEY),--update-key $(UPDATE_KEY)) $(SCENARIO)

# Lanes (pytest markers, see pyproject.toml): unit, system, root, plus the postgresql store
# lane (the head-end unit tests again on PostgreSQL: tools/lab/lanes.py); each prints its duration.
test: venv lint
	@$(BIN)/python -m lab.lanes unit postgresql system root

test-fast: venv
	@$(BIN)/python -m lab.lanes --fast unit

lint: venv
	$(BIN)/ruff check .

e2e: venv
	$(BIN)/python -m lab.e2e

faults: venv
	$(BIN)/python -m faults --transport $(FAULTS_TRANSPORT)

# soaks (the slow lane, outside make test): 30 min per transport under the board heap cap
# (the Pico 2 W's free heap less the margin, tools/bench/soak.py), the firmware precompiled as
# deployed; BC_SOAK_S=N for a shorter run; side by side: make -j3 soak-http soak-https soak-mqtt
soak: venv
	BC_FIRMWARE_MPY=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider -m slow \
	    host_tests/test_soak.py

soak-http soak-https soak-mqtt soak-xmpp soak-email: venv
	BC_FIRMWARE_MPY=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider -m slow \
	    "host_tests/test_soak.py::test_soak_under_the_heap_cap[$(@:soak-%=%)]"

bench: venv
	$(BIN)/python -m bench

# the smallest heap each configuration and transport passes on the board interpreter (~25 min)
heap-budget: venv
	$(BIN)/python -m bench.heap_budget

# make deploy BOARD=esp32|rp2 PORT=/dev/ttyUSB0 [DEPLOY_ARGS="--device-id m1 --server-url ..."]
# (the device key: BC_DEVICE_KEY=... in the environment, never on the command line)
BOARD ?= esp32
PORT ?= /dev/ttyUSB0
deploy: venv
	@$(BIN)/python -m lab.deploy --board $(BOARD) --port $(PORT) $(DEPLOY_ARGS)

# make hil BOARD=esp32|rp2 PORT=/dev/ttyUSB0 [HIL_SERVER=https://host:port]: the smoke set on
# a real board (tools/lab/hil.py); skips with the reason when no board is attached
HIL_SERVER ?=
hil: venv
	BC_HIL_BOARD=$(BOARD) BC_HIL_PORT=$(PORT) BC_HIL_SERVER=$(HIL_SERVER) \
	    $(BIN)/python -m pytest -q -rs -p no:cacheprovider -m slow host_tests/test_hil.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .build
