"""The dashboard-at-scale bench (tools/bench/dashboard_scale.py, part of `make bench`) runs
end to end at a tiny size, so it cannot rot: a real head-end with 50 meters, the fleet page
timed, exchanges with and without 2 live SSE streams, the streams' events matched to the
exchanges that stored them."""

import pytest

from bench import dashboard_scale, dashboard_scale_report

pytestmark = pytest.mark.system


def test_the_bench_measures_a_small_fleet_end_to_end(capsys):
    r = dashboard_scale.measure(n=50, streams=2, runs=1, seconds=1.0, rate=50.0, readings=2)
    # the page the figure times is the real fleet page, with every meter on it
    assert r["fleet_rows"] == 50 and r["fleet_small_rows"] == 10
    assert 0 < r["fleet_s"] < 30 and 0 < r["health_s"] < 30
    # exchanges were answered, with and without streams, none failed
    assert r["errors"] == 0
    assert [x["n"] for x in r["without"]] == [50] and [x["n"] for x in r["with"]] == [50]
    assert 0 < r["p99_without_s"] < 30 and 0 < r["p99_with_s"] < 30
    # the streams saw readings the exchanges stored, and each was matched to its exchange
    assert r["streams"] == 2 and r["sse_n"] > 0 and r["sse_n"] <= r["events"]
    assert 0 <= r["sse_p50_s"] < 10 and r["cpu_with_pct"] > 0 and r["cpu_without_pct"] > 0
    dashboard_scale_report.print_table(r)
    out = capsys.readouterr().out
    assert "Fleet page /ui/, 50 meters" in out and "SSE latency" in out


def test_the_cli_refuses_bad_sizes_in_one_line(capsys):
    assert dashboard_scale.main(["--n", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
