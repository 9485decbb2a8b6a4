"""On-duty schedules: when an operator counts as available for alarms (escalation.py), as
weekly windows in UTC, e.g. ["mon-fri 08:00-17:00", "sat 09:00-12:00", "daily 22:00-24:00"],
or ["always"]. A window never crosses midnight: write two."""

import re
import time

from .db import dumps, loads

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^(daily|[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*) "
                     r"(\d\d):(\d\d)-(\d\d):(\d\d)$")
MAX_WINDOWS = 32


class DutyError(ValueError):
    pass


def parse(windows):
    """[(set of weekdays 0..6, start minute, end minute)]; DutyError with the reason."""
    if not isinstance(windows, list) or not 1 <= len(windows) <= MAX_WINDOWS:
        raise DutyError("a schedule is a list of 1 to %d windows" % MAX_WINDOWS)
    out = []
    for text in windows:
        text = str(text).strip().lower()
        if text == "always":
            out.append((set(range(7)), 0, 1440))
            continue
        m = _WINDOW.match(text)
        if not m:
            raise DutyError("%r is not a window like 'mon-fri 08:00-17:00' or 'always'" % text)
        days = set(range(7)) if m[1] == "daily" else _days(m[1])
        h1, m1, h2, m2 = (int(m[i]) for i in range(2, 6))
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or start >= end:
            raise DutyError("%r: the window must run forward within one day (00:00-24:00)"
                            % text)
        out.append((days, start, end))
    return out


def _days(spec):
    days = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        for name in (first, last or first):
            if name not in DAYS:
                raise DutyError("unknown day %r (one of %s)" % (name, ", ".join(DAYS)))
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise DutyError("%s: days run mon..sun" % part)
        days.update(range(a, b + 1))
    return days


def within(windows, now):
    t = time.gmtime(now)
    minute = t.tm_hour * 60 + t.tm_min
    return any(t.tm_wday in days and start <= minute < end for days, start, end in windows)


def set_schedule(db, operator, windows):
    parse(windows)
    with db.tx():
        db.run("INSERT INTO operator_duty(operator, schedule) VALUES (?, ?) ON CONFLICT "
               "(operator) DO UPDATE SET schedule = excluded.schedule",
               operator, dumps(windows))


def get_schedule(db, operator):
    row = db.one("SELECT schedule FROM operator_duty WHERE operator = ?", operator)
    return None if row is None else loads(row["schedule"])


def clear_schedule(db, operator):
    with db.tx():
        return db.run("DELETE FROM operator_duty WHERE operator = ?", operator).rowcount == 1


def on_duty(hub, operator, now):
    """A presence source for escalation.py."""
    windows = get_schedule(hub.db, operator)
    return "on duty" if windows and within(parse(windows), now) else None
