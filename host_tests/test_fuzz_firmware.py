"""Fuzz the firmware parsers with hypothesis: the meter's HTTP response parser (httpc,
through a fake stream), the work decoder (ops.Dispatcher.handle) and the response envelope
(comms.apply_response), config validation and config files, outbox segment recovery.

The cases run in-process under CPython (hypothesis) and, for a few hundred
hypothesis-generated inputs per parser, under the real MicroPython unix port through
mp_scripts/fuzz_parsers.py (the same harness code). Budgets and statistics: fuzz_common.py.
"""

import json

import fuzz_parsers as fz
import pytest
from fuzz_common import EXAMPLES, FUZZ, HERE, MP_EXAMPLES, Stats
from fuzz_strategies import MP_STRATEGIES, STRATEGIES
from hypothesis import HealthCheck, Phase, given, settings

from lab import runner

pytestmark = pytest.mark.unit

# --- firmware parsers, CPython in-process ---

@pytest.mark.parametrize("parser", sorted(STRATEGIES))
def test_firmware_parser_cpython(parser, tmp_path):
    stats = Stats(parser)
    tmp = str(tmp_path)

    @FUZZ
    @given(STRATEGIES[parser])
    def check(value):
        try:
            out = stats.case(fz.run_case, parser, value, tmp)
        except Exception as exc:
            raise AssertionError("%s crashed on %r: %s: %s" % (parser, value, type(exc).__name__,
                                                                exc)) from exc
        assert out == "ok" or out.startswith("err:")

    assert stats.run(check) >= min(EXAMPLES, 50)


# --- firmware parsers, under the real MicroPython unix port ---

def _generate(strategy, n):
    """n hypothesis-generated inputs (generate phase only, no shrinking)."""
    out = []

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value):
        out.append(value)

    collect()
    return out


@pytest.mark.parametrize("parser", sorted(MP_STRATEGIES))
def test_firmware_parser_micropython(parser, tmp_path):
    cases = _generate(MP_STRATEGIES[parser], MP_EXAMPLES)
    stats = Stats(parser)
    lines = "".join(json.dumps([parser, c]) + "\n" for c in cases).encode()
    timeout = 60 + 0.05 * len(cases)
    out = runner.run("micropython", HERE / "mp_scripts" / "fuzz_parsers.py", str(tmp_path),
                 stdin=lines, timeout=timeout)
    results = runner.records(out)
    assert len(results) == len(cases), "the driver stopped early"
    crashes = [(c, r) for c, r in zip(cases, results) if not (r == "ok" or r.startswith("err:"))]
    stats.outcomes.update(results)
    stats.report("micropython", failed=bool(crashes))
    assert not crashes, "MicroPython %s crashed on %d inputs, first: %r" % (
        parser, len(crashes), crashes[0])
