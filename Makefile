# backchannel: `make sim` and `make test` are the two commands; both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENARIO ?= scenarios/normal.json
TRANSPORT ?= http
FAULTS_TRANSPORT ?= both
MPLIB := $(VENV)/mplib
export MICROPYPATH := .frozen:$(CURDIR)/firmware:$(CURDIR)/boards:$(CURDIR)/$(MPLIB)

.PHONY: venv sim test e2e faults bench deploy clean

$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

# ...plus the micropython-lib modules the firmware imports (umqtt.simple, pinned, hashed):
# a hash check when present, a download only when missing or damaged.
venv: $(VENV)/.installed
	@$(BIN)/python tools/fetch_mplib.py $(MPLIB)

sim: venv
	$(BIN)/python tools/sim.py --transport $(TRANSPORT) $(SCENARIO)

test: venv
	$(BIN)/python -m pytest -q host_tests

e2e: venv
	$(BIN)/python tools/e2e.py

faults: venv
	$(BIN)/python tools/faults.py --transport $(FAULTS_TRANSPORT)

bench: venv
	$(BIN)/python tools/bench.py

# make deploy BOARD=esp32|rp2 PORT=/dev/ttyUSB0 [DEPLOY_ARGS="--device-id m1 --server-url ..."]
# (the device key: BC_DEVICE_KEY=... in the environment, never on the command line)
BOARD ?= esp32
PORT ?= /dev/ttyUSB0
deploy: venv
	@$(BIN)/python tools/deploy.py --board $(BOARD) --port $(PORT) $(DEPLOY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .build
