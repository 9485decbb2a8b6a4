"""Rendezvous: a meter's `send` becomes `peer` work for the target; the target's outcome
goes back to the sender as a `message` work item, through the optional transform hook
fn(message, sender, target) -> dict."""

import logging

from . import devices, policy, work_size, workq
from .db import dumps, loads

log = logging.getLogger("backchannel.routing")

def handle_send(hub, sender, body):
    """A `send` item {"to", "ref", "op", "args"[, "expires_in"]} from meter `sender`."""
    target, ref, op = body.get("to"), body.get("ref"), body.get("op")
    args = body.get("args", {})
    if not isinstance(target, str) or not isinstance(op, str) or not isinstance(args, dict):
        return _reply(hub, sender, str(target), ref,
                      {"status": "rejected", "reason": "send needs to, op and args"})
    refused = policy.peer_refusal(hub, sender, target, op)    # deny by default
    if refused:
        return _reply(hub, sender, target, ref, {"status": "rejected", "reason": refused})
    row = devices.get(hub.db, target)
    if row is None:
        return _reply(hub, sender, target, ref,
                      {"status": "rejected", "reason": "unknown device %s" % target})
    seconds = body.get("expires_in", hub.settings.peer_expires)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        seconds = hub.settings.peer_expires
    seconds = min(seconds, 30 * 86400)
    expires = workq.expiry(hub.now(), seconds)
    size = work_size.item_bytes(op, args, "peer", "device:%s" % sender, expires, target)
    too_large = work_size.refusal(size, row["transport"], target)
    if too_large:
        return _reply(hub, sender, target, ref, {"status": "rejected", "reason": too_large})
    try:
        policy.check_quota(hub, target, len(dumps(args)))
    except policy.Refused as e:
        return _reply(hub, sender, target, ref, {"status": "rejected", "reason": e.reason})
    return workq.enqueue(hub, target, op, args, "peer", "device:%s" % sender,
                         expires, reply_to=sender, ref=ref)


def route_outcome(hub, row, status, result=None, reason=None):
    """The routed work `row` ended: tell the meter that sent it."""
    if not row["reply_to"]:
        return None
    outcome = {"status": status}
    if result is not None:
        outcome["body"] = result
    if reason is not None:
        outcome["reason"] = reason
    return _reply(hub, row["reply_to"], row["device"], loads(row["ref"]), outcome)


def _reply(hub, sender, target, ref, outcome):
    message = {"from": target, "ref": ref, "result": outcome}
    if hub.transform is not None:
        try:
            changed = hub.transform(dict(message), sender, target)
            if not isinstance(changed, dict):
                raise TypeError("returned %s, not a dict" % type(changed).__name__)
            message = changed
        except Exception as e:  # fail closed: never deliver what the hook refused
            log.error("transform failed for %s -> %s: %s", target, sender, e)
            message = {"from": target, "ref": ref,
                       "result": {"status": "rejected", "reason": "transform failed"}}
    if devices.get(hub.db, sender) is None:
        return None
    return workq.enqueue(hub, sender, "message", message, "operator", "device:%s" % target,
                         workq.expiry(hub.now(), hub.settings.message_expires))
