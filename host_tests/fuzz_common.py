"""Shared by the fuzz tests (test_fuzz_firmware.py, test_fuzz_waveform.py,
test_fuzz_headend.py): the example budgets, the hang bound, outcome statistics and the
generic JSON strategies. Every parser must not crash (only the documented clear errors)
and not hang.

Examples per parser: BC_FUZZ_EXAMPLES (default 200, for `make test`); tools/fuzz runs
the long campaign with 100000. BC_FUZZ_MP_EXAMPLES (default 300): inputs per parser under
MicroPython. BC_SCHEMA_EXAMPLES (default 10): schemathesis examples per API operation and
mode. BC_FUZZ_STATS names a file to which each test appends a JSON
line {"parser", "examples", "outcomes", "seconds"} (tools/fuzz prints them). SIGTERM stops a
parser's run (tools/fuzz --stop-after): the inputs it ran are reported, marked "stopped".
"""

import collections
import json
import os
import signal
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent

EXAMPLES = int(os.environ.get("BC_FUZZ_EXAMPLES", "200"))
MP_EXAMPLES = int(os.environ.get("BC_FUZZ_MP_EXAMPLES", "300"))
CASE_SECONDS = 5.0          # the hang bound: no single input may take longer (for an
# in-process parser (Stats.case): this much CPU, or CASE_WAIT_SECONDS of wall time, a wait
# that never ends; a loaded machine stalls a niced process for seconds of wall time: an
# exchange input took 6.4 s at a load of 15 and 0.2 s when hypothesis ran it again)
CASE_WAIT_SECONDS = 60.0
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), derandomize=False)


class Stopped(KeyboardInterrupt):
    """SIGTERM during a run: the campaign's time is up (not a failure of the parser)."""


def _stop(signum, frame):
    raise Stopped()


class Stats:
    """Outcome counts and the slowest case per parser, reported to BC_FUZZ_STATS."""

    def __init__(self, parser):
        self.parser = parser
        self.outcomes = collections.Counter()
        self.slowest = 0.0
        self.start = time.monotonic()

    def case(self, fn, *args):
        t, cpu = time.monotonic(), time.process_time()
        out = fn(*args)
        took, cpu = time.monotonic() - t, time.process_time() - cpu
        self.slowest = max(self.slowest, took)
        assert cpu < CASE_SECONDS and took < CASE_WAIT_SECONDS, (
            "%s: one input took %.1f s of CPU, %.1f s in all (hang bounds %.0f s of CPU, "
            "%.0f s in all)" % (self.parser, cpu, took, CASE_SECONDS, CASE_WAIT_SECONDS))
        self.outcomes[out] += 1
        return out

    def report(self, runtime="cpython", failed=False, stopped=False):
        n = sum(self.outcomes.values())
        path = os.environ.get("BC_FUZZ_STATS")
        if path:
            row = {"parser": self.parser, "runtime": runtime, "examples": n, "failed": failed,
                   "outcomes": dict(self.outcomes), "slowest_s": round(self.slowest, 4),
                   "seconds": round(time.monotonic() - self.start, 2)}
            if stopped:
                row["stopped"] = True
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
        return n

    def run(self, check, runtime="cpython"):
        """check(), then report (also when it failed, or SIGTERM stopped it)."""
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            check()
        except Stopped:
            self.report(runtime, stopped=True)
            raise
        except BaseException:
            self.report(runtime, failed=True)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self.report(runtime)


# generic JSON values (with NaN, Infinity and big ints) and the MicroPython-readable subset
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats() | st.text(max_size=20))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
finite_scalars = (st.none() | st.booleans() | st.integers(-2**62, 2**62)
                  | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
# JSON the MicroPython json module can read back (no NaN/Infinity, ints of any size)
mp_json = st.recursive(finite_scalars | st.integers(), lambda c: st.lists(c, max_size=4)
                       | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
