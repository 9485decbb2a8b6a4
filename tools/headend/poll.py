"""The poll rate: one owner (the head-end, which sends it as every response's `next`) and one
range, checked the same way by the API, the CLI and the settings (docs/protocol.md)."""

CONTINUOUS = 0          # call again as soon as an exchange ends (continuous long-poll)
MIN_S = 5
MAX_S = 3600
RULE = "0 (continuous long-poll) or %d..%d seconds" % (MIN_S, MAX_S)
MOVED = ("set_poll is not a meter op: the head-end owns the poll rate; set a meter's poll "
         "with PATCH /v1/devices/{id} {\"poll\": %s} or `backchannel poll METER SECONDS`" % RULE)


def refusal(seconds):
    """None if seconds is a valid poll, else the one-line reason."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        return "poll must be an integer: %s, not %r" % (RULE, seconds)
    if seconds != CONTINUOUS and not MIN_S <= seconds <= MAX_S:
        return "poll must be %s, not %d" % (RULE, seconds)
    return None


def checked(seconds):
    """seconds, or ValueError with the reason (a pydantic validator)."""
    reason = refusal(seconds)
    if reason:
        raise ValueError(reason)
    return seconds
