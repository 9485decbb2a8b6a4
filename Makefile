# backchannel: `make sim` and `make test` are the two commands; both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENARIO ?= scenarios/normal.json
export MICROPYPATH := .frozen:$(CURDIR)/firmware:$(CURDIR)/boards

.PHONY: venv sim test e2e bench clean

$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

venv: $(VENV)/.installed

sim: venv
	$(BIN)/python tools/sim.py $(SCENARIO)

test: venv
	$(BIN)/python -m pytest -q host_tests

e2e: venv
	$(BIN)/python tools/e2e.py

bench: venv
	$(BIN)/python tools/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
