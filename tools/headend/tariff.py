"""A utility's time-of-use tariff in local time, compiled to the UTC switch times a meter
takes (op `tariff`, firmware/tou.py), so a meter never handles a time zone or DST.

The local form (JSON; docs/billing.md):

    {"id": "tou-2027", "timezone": "Europe/Paris", "rates": ["peak", "offpeak"],
     "seasons": [{"name": "winter", "from": "10-01", "to": "03-31",
                  "week": {"mon-fri": [["00:00", "offpeak"], ["07:00", "peak"],
                                       ["22:00", "offpeak"]],
                           "sat,sun": [["00:00", "offpeak"]]}},
                 {"name": "summer", "from": "04-01", "to": "09-30", "week": {...}}],
     "holidays": {"dates": ["12-25", "2027-04-05"], "day": [["00:00", "offpeak"]]},
     "billing": {"day": 1, "time": "00:00"}}

Instead of "seasons", one "week" applies all year. Each day's schedule starts at 00:00 and its
times increase. Seasons cover every day of the year exactly once; the day groups of a week
cover each weekday exactly once. Anything else is refused with the reason (TariffError).

DST: a local time the clocks skip (02:30 on the spring-forward day) switches when the clocks
jump; one they pass twice (the autumn 02:30) switches at the first."""

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_RATES = 8
MAX_SWITCHES = 1024       # firmware/tou.py MAX_SWITCHES
MAX_DAYS = 366
DEFAULT_DAYS = 62
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HM = re.compile(r"(\d\d):(\d\d)\Z")
_MD = re.compile(r"(\d\d)-(\d\d)\Z")
_YMD = re.compile(r"(\d{4})-(\d\d)-(\d\d)\Z")
_LEAP = 2024              # seasons are checked on a leap year's days (02-29 included)


class TariffError(ValueError):
    pass


def _hm(text, where):
    m = _HM.match(text) if isinstance(text, str) else None
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise TariffError("%s: %r is not a time HH:MM (00:00..23:59)" % (where, text))
    return int(m.group(1)) * 60 + int(m.group(2))


def _md(text, where):
    m = _MD.match(text) if isinstance(text, str) else None
    try:
        return dt.date(_LEAP, int(m.group(1)), int(m.group(2))) if m else None
    except ValueError:
        pass
    raise TariffError("%s: %r is not a date MM-DD" % (where, text))


def _day(profile, rates, where):
    """[(minute, rate index)] from [["HH:MM", rate], ...]."""
    if not isinstance(profile, list) or not profile:
        raise TariffError("%s: a day is a list of [\"HH:MM\", rate]" % where)
    out = []
    for k, entry in enumerate(profile):
        if not (isinstance(entry, list) and len(entry) == 2):
            raise TariffError("%s[%d]: expected [\"HH:MM\", rate]" % (where, k))
        minute = _hm(entry[0], "%s[%d]" % (where, k))
        if entry[1] not in rates:
            raise TariffError("%s[%d]: rate %r is not one of %s"
                              % (where, k, entry[1], ", ".join(rates)))
        if k == 0 and minute != 0:
            raise TariffError("%s: a day's schedule starts at 00:00" % where)
        if out and minute <= out[-1][0]:
            raise TariffError("%s: %s does not come after %s: overlapping or unordered "
                              "switches" % (where, entry[0], profile[k - 1][0]))
        out.append((minute, rates.index(entry[1])))
    return out


def _day_names(spec, where):
    names = []
    for part in spec.lower().replace(" ", "").split(","):
        a, _, b = part.partition("-")
        if a not in DAYS or (b and b not in DAYS):
            raise TariffError("%s: %r is not a day or a range of days (mon..sun)"
                              % (where, spec))
        i, j = DAYS.index(a), DAYS.index(b or a)
        names += [DAYS[(i + k) % 7] for k in range((j - i) % 7 + 1)]
    return names


def _week(week, rates, where):
    """Seven day profiles, mon..sun; each weekday in exactly one group."""
    if not isinstance(week, dict) or not week:
        raise TariffError("%s: a week is an object {\"mon-fri\": [...], ...}" % where)
    days = [None] * 7
    owner = [None] * 7
    for spec, profile in week.items():
        parsed = _day(profile, rates, "%s.%s" % (where, spec))
        for name in _day_names(spec, "%s.%s" % (where, spec)):
            k = DAYS.index(name)
            if days[k] is not None:
                raise TariffError("%s: %s is in both %r and %r: overlapping schedules"
                                  % (where, name, owner[k], spec))
            days[k], owner[k] = parsed, spec
    missing = [DAYS[k] for k in range(7) if days[k] is None]
    if missing:
        raise TariffError("%s: no schedule for %s" % (where, ", ".join(missing)))
    return days


class Tariff:
    """A checked local tariff; compile() gives the meter's UTC form."""

    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise TariffError("a tariff is a JSON object")
        self.id = spec.get("id")
        if not isinstance(self.id, str) or not 0 < len(self.id) <= 32:
            raise TariffError("id: a name of 1..32 characters")
        try:
            self.zone = ZoneInfo(spec.get("timezone") or "")
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise TariffError("timezone: %r is not a time zone name such as Europe/Paris or "
                              "UTC" % (spec.get("timezone"),)) from None
        rates = spec.get("rates")
        if (not isinstance(rates, list) or not 1 <= len(rates) <= MAX_RATES
                or not all(isinstance(r, str) and 0 < len(r) <= 32 for r in rates)):
            raise TariffError("rates: a list of 1..%d names" % MAX_RATES)
        if len(set(rates)) != len(rates):
            raise TariffError("rates: a rate is named twice")
        self.rates = rates
        self.seasons = self._seasons(spec)
        self.holidays, self.holiday_day = self._holidays(spec.get("holidays"))
        self.billing = self._billing(spec.get("billing"))

    def _seasons(self, spec):
        if "seasons" in spec and "week" in spec:
            raise TariffError("give either seasons or one week, not both")
        if "week" in spec:
            return [("all year", None, None, _week(spec["week"], self.rates, "week"))]
        seasons = spec.get("seasons")
        if not isinstance(seasons, list) or not seasons:
            raise TariffError("seasons: a list of {name, from, to, week} (or one week)")
        out = []
        cover = {}
        for k, s in enumerate(seasons):
            if not isinstance(s, dict):
                raise TariffError("seasons[%d]: an object {name, from, to, week}" % k)
            name = s.get("name") or "seasons[%d]" % k
            a = _md(s.get("from"), "%s.from" % name)
            b = _md(s.get("to"), "%s.to" % name)
            out.append((name, a, b, _week(s.get("week"), self.rates, "%s.week" % name)))
            day = a
            while True:
                if day in cover:
                    raise TariffError("seasons %s and %s both cover %s: overlapping seasons"
                                      % (cover[day], name, day.strftime("%m-%d")))
                cover[day] = name
                if day == b:
                    break
                day += dt.timedelta(days=1)
                if day.year != _LEAP:
                    day = dt.date(_LEAP, 1, 1)
        day = dt.date(_LEAP, 1, 1)
        while day.year == _LEAP:
            if day not in cover:
                raise TariffError("no season covers %s" % day.strftime("%m-%d"))
            day += dt.timedelta(days=1)
        return out

    def _holidays(self, spec):
        if spec is None:
            return set(), None
        if not isinstance(spec, dict) or not isinstance(spec.get("dates"), list):
            raise TariffError("holidays: {\"dates\": [\"MM-DD\" or \"YYYY-MM-DD\"], \"day\": "
                              "[...]}")
        dates = set()
        for text in spec["dates"]:
            m = _YMD.match(text) if isinstance(text, str) else None
            if m:
                try:
                    dates.add(dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))))
                    continue
                except ValueError:
                    pass
            dates.add(_md(text, "holidays.dates").strftime("%m-%d"))
        return dates, _day(spec.get("day"), self.rates, "holidays.day")

    @staticmethod
    def _billing(spec):
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise TariffError("billing: {\"day\": 1..28, \"time\": \"HH:MM\"}")
        day = spec.get("day", 1)
        if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 28:
            raise TariffError("billing.day: an int within 1..28 (every month has it)")
        return day, _hm(spec.get("time", "00:00"), "billing.time")

    def day_profile(self, date):
        if date in self.holidays or date.strftime("%m-%d") in self.holidays:
            return self.holiday_day
        md = dt.date(_LEAP, date.month, date.day)
        for _, a, b, week in self.seasons:
            if a is None or (a <= md <= b if a <= b else md >= a or md <= b):
                return week[date.weekday()]
        raise AssertionError("seasons cover every day")   # checked in _seasons

    def utc(self, date, minute):
        """Unix seconds of local `date` + `minute`: a skipped time at the jump, a repeated
        one at its first occurrence."""
        wall = dt.datetime(date.year, date.month, date.day, minute // 60, minute % 60)
        first = wall.replace(tzinfo=self.zone, fold=0)
        t = int(first.timestamp())
        if dt.datetime.fromtimestamp(t, self.zone).replace(tzinfo=None) == wall:
            return t
        # in a gap: the first second whose local time is at or after the wall time
        lo = int(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        hi = t
        lo, hi = min(lo, hi), max(lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if dt.datetime.fromtimestamp(mid, self.zone).replace(tzinfo=None) >= wall:
                hi = mid
            else:
                lo = mid
        return hi

    def compile(self, start, days=DEFAULT_DAYS):
        """The `tariff` op's args from Unix second `start` for `days` days."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise TariffError("days: an int within 1..%d" % MAX_DAYS)
        start = int(start)
        end = start + days * 86400
        first = dt.datetime.fromtimestamp(start, self.zone).date() - dt.timedelta(days=1)
        switches = []           # (utc, rate), merged
        date = first
        while True:
            for minute, rate in self.day_profile(date):
                t = self.utc(date, minute)
                while switches and switches[-1][0] >= t:   # a later time in a DST gap wins
                    switches.pop()
                if not switches or switches[-1][1] != rate:
                    switches.append((t, rate))
            if self.utc(date, 0) >= end:
                break
            date += dt.timedelta(days=1)
        before = [s for s in switches if s[0] <= start]
        kept = [(0, before[-1][1])] + [(t - start, r) for t, r in switches if start < t < end]
        if len(kept) > MAX_SWITCHES:
            raise TariffError("%d switches in %d days: a meter takes at most %d; send fewer "
                              "days" % (len(kept), days, MAX_SWITCHES))
        out = {"id": self.id, "rates": self.rates, "t0": start, "end": days * 86400,
               "switches": [list(s) for s in kept], "freezes": self._freezes(start, end)}
        return out

    def _freezes(self, start, end):
        if self.billing is None:
            return []
        day, minute = self.billing
        local = dt.datetime.fromtimestamp(start, self.zone).date().replace(day=1)
        out = []
        while True:
            t = self.utc(local.replace(day=day), minute)
            if t > end:
                return out
            if t > start:
                out.append(t - start)
            local = (local + dt.timedelta(days=32)).replace(day=1)


def compile_tariff(spec, start, days=DEFAULT_DAYS):
    """The meter's UTC form of a local tariff (TariffError says what is wrong)."""
    return Tariff(spec).compile(start, days)
