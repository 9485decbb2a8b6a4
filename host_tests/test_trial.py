"""A guarded change with fallback on the meter (firmware/trial.py: `set_url`,
`set_encoding`) under the MicroPython unix port, CPython and the board interpreter, one
process each (mp_scripts/trial_checks.py): bad values are refused with the reason and save
nothing; each start on trial counts and the fourth ends it; past `within_s` the watcher ends
it and asks for a restart; a healthy exchange keeps a move and makes the new head-end's work
window the meter's, also after a power cut mid-commit; a damaged record is no trial."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "trial_checks.py"
NEW, OLD = "https://new.example:8443", "https://old.example:8443"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request, tmp_path_factory):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    d = tmp_path_factory.mktemp("trial-" + request.param)
    return json.loads(runner.run(request.param, DRIVER, str(d)))


def test_bad_values_are_refused_with_the_reason(out):
    errors = out["errors"]
    assert all(e is not None and e.startswith("ValueError") for e in errors), errors
    assert "https" in errors[0] and "already" in errors[1] and "within_s" in errors[2]
    assert "within_s" in errors[3] and "not a guarded change" in errors[5]
    assert "HTTP only" in errors[6] and out["nothing_saved"]


def test_each_start_counts_and_the_fourth_ends_the_trial(out):
    assert out["starts"] == [NEW, NEW, NEW, OLD]
    record, why = out["ended"]
    assert record is None and "no healthy exchange in 3 starts" in why


def test_past_within_s_the_trial_ends_and_the_meter_restarts(out):
    assert out["early"] == []
    (notice,) = out["late"]
    assert notice["type"] == "notice" and "within 10 s" in notice["what"]
    assert out["late_restart"] and out["late_record"] is None


def test_a_healthy_exchange_keeps_the_move_and_its_work_window(out):
    assert out["trial_inbox"].endswith("/trial.inbox")
    assert out["before_exchange"]
    assert out["kept_url"] == NEW
    assert out["after"] == [None, True, "duplicate"]


def test_a_power_cut_mid_commit_is_settled_and_damage_is_no_trial(out):
    assert out["inbox_saved_while_record"] == [True]    # [False] before: a cut between
    assert out["cut_before_rename"] == [True, "new"]    # the two left the old window
    assert out["settled"] == [True, 7, False]
    assert out["damaged"] is None
