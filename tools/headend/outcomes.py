"""How work ends: results from the meter, expiry, cancellation, and their side effects
(routed work answers its sender)."""

from . import devices, key_rotation, routing, workq

_REASONS = {
    "queued": "expired before delivery",
    "held": "held until the deadline: meter not available",
    "delivered": "no result before expiry",
}


def settle(hub, row, status, now, result=None, reason=None):
    """Give `row` its final outcome (first one wins) and apply the side effects."""
    if not workq.finish(hub.db, row["num"], status, now, result, reason):
        return False
    routing.route_outcome(hub, row, status, result, reason)
    return True


def on_result(hub, device, body, now):
    """A `result` item {"work", "status", "body"|"reason"} from the meter."""
    row = workq.get(hub.db, body.get("work"))
    status = body.get("status")
    if row is None or row["device"] != device or status not in workq.RESULT_STATUSES:
        return False
    reason = body.get("reason")
    if not settle(hub, row, status, now, body.get("body"),
                  reason if isinstance(reason, str) else None):
        return False
    if row["op"] == "rotate_key":      # the meter's ECDH half: the new key beside the old
        key_rotation.on_result(hub.db, device, row, status, body.get("body"), now)
    return True


def expire_due(hub, now, device=None):
    """Mark open work past its expiry `expired`; returns how many."""
    rows = workq.due(hub.db, now, device)
    presence = {}
    for row in rows:
        state = row["status"]
        if state == "queued" and row["when_available"]:
            if row["device"] not in presence:
                dev = devices.get(hub.db, row["device"])
                presence[row["device"]] = dev["presence"] if dev else None
            state = workq.outcome(row, presence[row["device"]])
        settle(hub, row, "expired", now, None, _REASONS.get(state, "expired"))
    return len(rows)


def cancel(hub, row, now):
    """Cancel work not yet delivered; returns None or the reason it cannot be cancelled."""
    if row["status"] != "queued":
        return "work %s is already %s" % (workq.wid(row["num"]), row["status"])
    settle(hub, row, "cancelled", now, None, "cancelled by operator")
    return None
