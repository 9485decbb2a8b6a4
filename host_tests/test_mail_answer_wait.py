"""The email meter's wait for the head-end's answer (firmware/mail_comms.py AnswerWait) on the
three interpreters: it follows the round trips seen as RFC 6298's retransmission timeout does
(checked against that formula in floating point here), within ANSWER_MIN_S..answer_s,
doubles after each unanswered request, and a link gives up a request after it, not after a
fixed answer_s (a lost answer cost 120 s; docs/reliability.md)."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "answer_wait_checks.py"
CAP_MS, FLOOR_MS = 120_000, 15_000


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def checks(request):
    return json.loads(runner.run(request.param, CHECKS, timeout=120))


def rfc6298(events):
    """The wait after each event: SRTT + 4 RTTVAR (alpha 1/8, beta 1/4, first sample R:
    SRTT R, RTTVAR R/2), at least the floor, doubled per miss since the last answer, at
    most the cap; samples clipped to the cap."""
    srtt = rttvar = None
    misses, out = 0, []
    for kind, rtt in events:
        if kind == "s":
            rtt = min(rtt, CAP_MS)
            if srtt is None:
                srtt, rttvar = rtt, rtt / 2
            else:
                rttvar = 0.75 * rttvar + 0.25 * abs(srtt - rtt)
                srtt = 0.875 * srtt + 0.125 * rtt
            misses = 0
        else:
            misses += 1
        out.append(min(CAP_MS, max(FLOOR_MS, srtt + 4 * rttvar) * 2 ** misses))
    return out


def test_the_wait_follows_the_round_trips_as_rfc_6298(checks):
    assert checks["fresh"] == CAP_MS            # nothing timed yet: answer_s
    want = rfc6298([tuple(e) for e in checks["events"]])
    got = checks["waits"]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):    # whole ms: a few ms of rounding a step
        assert abs(g - w) <= 8 * (1 << min(i, 4)), (i, checks["events"][:i + 1], got, want)
    assert min(got) == FLOOR_MS and max(got) == CAP_MS     # both bounds were reached


def test_a_link_gives_up_an_unanswered_request_after_the_wait(checks):
    assert checks["due_at_14s"] == [False, True, 0]        # still waiting for the answer
    sent, awaiting, failures, error, held = checks["due_at_15s"]
    assert not sent and not awaiting and failures == 1 and held, checks["due_at_15s"]
    assert error == "no answer from the head-end within 15 s"
    assert checks["wait_after_miss"] == 2 * FLOOR_MS        # doubled until the next answer
