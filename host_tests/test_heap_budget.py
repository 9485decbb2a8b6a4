"""bench.heap_budget (`make heap-budget`): the bisection finds the smallest passing heap in
2 KiB steps, the CLI refuses an unknown scenario in one line, and one start-up probe on the
board interpreter passes with a large heap and fails with a tiny one. bench.interpreters:
its table's rows."""

import subprocess
import sys

import pytest

from bench import heap_budget, interpreters
from lab import pki

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("threshold", [33, 100, 101, 256, 511])
def test_bisect_finds_the_smallest_passing_step(threshold):
    probes = []

    def passes(kib):
        probes.append(kib)
        return kib >= threshold

    got = heap_budget.bisect(passes)
    assert got % heap_budget.STEP == 0 and got - heap_budget.STEP < threshold <= got
    assert len(probes) <= 10


def test_bisect_says_none_when_even_the_top_fails():
    assert heap_budget.bisect(lambda kib: False) is None


def test_unknown_scenario_is_one_line():
    p = subprocess.run([sys.executable, "-m", "bench.heap_budget", "start-nope"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown scenario start-nope" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("interpreter", ["board"])
def test_start_probe_on_the_board(tmp_path, interpreter):
    pki.init(tmp_path / "ca")
    start = heap_budget.Start(tmp_path, str(tmp_path / "ca" / "ca.pem"))
    assert start.passes("start-https", 512)
    assert not start.passes("start-https", 48)


def test_interpreters_table_rows():
    # bench/interpreters.py: one row per interpreter, a missing one says so
    side = {"feed_hz50_ns": 50.0, "thd_hz50_ns": 600.0, "plain_hz50_ns": 500.0, "thd_orders": 31,
            "feed_heap_bytes_per_cycle": 0.0, "thd_heap_bytes_per_cycle": 0.0}
    rows = interpreters.rows({"micropython": side, "board": None})
    assert rows[0]["speedup"] == 10 and rows[0]["thd_cost"] == 12 and not rows[0]["missing"]
    assert rows[1] == {"interpreter": "board", "missing": True}
