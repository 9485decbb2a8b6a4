"""The `tariff_day` scenario's tariff (make sim): a UTC time-of-use day whose `peak` starts
at the first whole minute `after_min` minutes or more after the sim starts and lasts
`peak_min` minutes, so a tariff day and a
shed_on_rate rule show within minutes. The head-end compiles it and queues op `tariff` as a
utility token, as POST /v1/devices/{id}/tariff does for a real tariff (docs/billing.md)."""

import time


def _hm(minute):
    return "%02d:%02d" % (minute // 60, minute % 60)


def spec(now=None, after_min=1, peak_min=2):
    now = int(now if now is not None else time.time())
    # the first whole minute at least after_min minutes from now
    start = ((now + 60 * after_min + 59) // 60) % 1440
    end = (start + peak_min) % 1440
    if end > start:
        day = [[_hm(start), "peak"], [_hm(end), "offpeak"]]
        if start > 0:
            day.insert(0, ["00:00", "offpeak"])
    else:  # the peak runs over midnight
        day = [["00:00", "peak"], [_hm(end), "offpeak"], [_hm(start), "peak"]]
        if end == 0:
            day = [["00:00", "offpeak"], [_hm(start), "peak"]]
    return {"id": "sim-day", "timezone": "UTC", "rates": ["peak", "offpeak"],
            "week": {"mon-sun": day}}


def send(api, device, days=2):
    """Queue the tariff for `device` through the head-end (api: a utility token's client)."""
    r = api.post("/v1/devices/%s/tariff" % device, json={"tariff": spec(), "days": days})
    r.raise_for_status()
    return r.json()
