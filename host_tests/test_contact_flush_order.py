"""The sweep saves held long-polls' last_contact in device order (headend/hub.py
flush_contacts). On PostgreSQL every process flushes its own long-polls' contacts; two
flushes that lock the same device rows in different orders deadlocked at 10,000 meters on
two workers (issue 19 bench: the sweep failed and those contacts were lost). One order for
every process cannot deadlock. Runs on both stores (the postgresql lane too)."""

import pytest
from headend_harness import client, headend  # noqa: F401

from headend import devices

pytestmark = pytest.mark.unit


def test_contacts_are_saved_in_device_order(headend, monkeypatch):  # noqa: F811
    hub = headend.hub
    names = ["m9", "m5", "m1", "m7", "m3"]
    with hub.db.tx():
        for n in names:
            devices.create(hub.db, n, poll=headend.settings.default_poll)
    for i, n in enumerate(names):               # answered in this order
        hub.contact(n, 1000.0 + i)
    seen = []
    many = hub.db.many

    def spy(sql, rows):
        rows = list(rows)
        if "last_contact" in sql:
            seen.extend(r[1] for r in rows)
        return many(sql, rows)

    monkeypatch.setattr(hub.db, "many", spy)
    hub.flush_contacts()
    assert seen == sorted(names)
    saved = {r["id"]: r["last_contact"] for r in hub.db.all(
        "SELECT id, last_contact FROM devices WHERE id IN (?, ?, ?, ?, ?)", *names)}
    assert saved == {n: 1000.0 + i for i, n in enumerate(names)}
    assert hub.contacts == {}
