"""The head-end's side of an exchange: the work a meter is answered with. deliver() waits
(the HTTP long-poll) until work is deliverable and answers it; push() builds the answer sent
unasked when work is queued for a meter on MQTT, XMPP or email. Work sent is marked
delivered, as much as fits the meter's room and one message.

Each look at the work is one call (_look) that runs off the event loop on PostgreSQL
(hub.off_loop): its statements are round trips to the server, and the loop goes on serving
other meters and the load balancer's health checks while they are in flight."""

import asyncio
import time

from . import devices, key_rotation, outcomes, work_size, workq

PROTOCOL = 2


def bind(device, nonce=None, conn=None):
    """The fields that bind a head-end -> meter message (docs/protocol.md "Bound responses"):
    the direction, the device, and the request nonce it answers or the meter's connection
    nonce it is pushed on. The body's signature covers them."""
    out = {"v": PROTOCOL, "dir": "down", "device": device}
    if nonce is not None:
        out["re"] = nonce
    if conn is not None:
        out["conn"] = conn
    return out


async def _hangup(receive):
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def first_look(hub, req, key, wait):
    """The first look at the meter's work, made with its exchange's store (exchange.admit:
    one trip off the loop on PostgreSQL). An exchange that does not wait: ((answer,
    contact), None), as _look(). One that may wait: (None, whether there is work now)."""
    if min(wait, hub.settings.max_wait) <= 0 or hub.closing:
        return _look(hub, req, key, False, True, False, 0.0, time.monotonic), None
    return None, not _quiet(hub, req.device, hub.now())


async def deliver(hub, req, key, wait, receive=None, first=None, since=None):
    """Wait (up to `wait`, capped) until work is deliverable; mark it delivered; answer.
    None if the meter disconnected while waiting. Each look at the work runs off the loop
    on PostgreSQL (hub.off_loop). `first`: first_look()'s, made before this long-poll
    listened, when hub.notifications was `since`: if nothing was woken since, its "no work"
    stands (any work queued after it woke someone, so changed the count)."""
    if first is not None and first[0] is not None:
        return _found(hub, req, first[0])
    loop = asyncio.get_running_loop()
    end = loop.time() + min(wait, hub.settings.max_wait)
    gone = woke = None
    try:
        while True:
            event = hub.listen(req.device)
            try:
                ending = end - loop.time() <= 0 or hub.closing
                if first is not None and not first[1] and not ending and \
                        hub.notifications == since:
                    found = None        # no work when stored, nothing woken since: wait
                else:
                    found = await hub.off_loop(_look, hub, req, key, woke, ending,
                                               gone is not None, end, loop.time)
                first = None
                if found is not None:
                    return _found(hub, req, found)
                gone = gone or asyncio.ensure_future(_hangup(receive))
                if not gone.done():         # until woken, timed out or hung up
                    gone.add_done_callback(event.wake)
                    timer = loop.call_later(max(0.0, end - loop.time()), event.wake)
                    try:
                        await event.fut
                    finally:
                        timer.cancel()
                        gone.remove_done_callback(event.wake)
                woke = event.woken
                if gone.done():
                    return None
            finally:
                hub.unlisten(req.device, event)
    finally:
        if gone is not None:
            gone.cancel()


def _found(hub, req, found):
    answer, contact = found
    if contact is not None:         # an idle long-poll ended: saved by the next sweep
        hub.contact(req.device, contact)
    return answer


def _look(hub, req, key, woke, ending, held, end, clock):
    """One look at the meter's work (the caller listens already, so work queued after it
    wakes the caller): (answer, contact) to answer now, where contact is the time of an idle
    long-poll's end for the next sweep to save (or None); None to go on waiting."""
    now = hub.now()
    # woken: work is likely; ending unheld (wait 0): the transaction reads anyway
    quiet = not woke and not (ending and not held) and _quiet(hub, req.device, now)
    if quiet and ending and held and _room_kept(hub, req):
        # an idle long-poll ends: nothing to write; last_contact is saved by the next sweep
        return _answer(hub, hub.db, req, key, [], req.room, now), now
    if quiet and not ending:
        return None
    with hub.tx(sync=False) as db:
        db.lock_device(req.device)
        now = hub.now()
        outcomes.expire_due(hub, now, req.device)
        rows = workq.deliverable(db, req.device, now)
        if not (rows or end - clock() <= 0 or hub.closing):
            return None
        contact = None
        if rows or not held:
            devices.touch(db, req.device, now)
        else:       # an idle long-poll ended: saved by the next sweep
            contact = now
        return _answer(hub, db, req, key, rows, req.room, now), contact


def _room_kept(hub, req):
    """The meter's room is the one stored: answering it with no work writes nothing."""
    return hub.db.one("SELECT room FROM devices WHERE id = ?", req.device)["room"] == \
        max(0, req.room)


def _quiet(hub, device, now):
    """No work to deliver or expire: read without a write transaction (the caller listens
    already, so work queued after this read wakes it)."""
    return not workq.waiting(hub.db, device, now)


def push(hub, device):
    """Work queued for `device` since its last exchange, up to the room it has left: the
    response to send it unasked (MQTT), with the work marked delivered, or None. Delivered
    work without a result is not pushed again: the meter's next exchange redelivers it."""
    with hub.tx() as db:
        db.lock_device(device)
        dev = devices.get(db, device)
        if dev is None or not dev["room"] or not dev["conn"]:
            return None
        now = hub.now()
        outcomes.expire_due(hub, now, device)
        rows = [r for r in workq.deliverable(db, device, now) if r["status"] == "queued"]
        if not rows:
            return None
        return _answer(hub, db, None, dev["key"], rows, dev["room"], now, device, dev["conn"])


def _answer(hub, db, req, key, rows, room, now, device=None, conn=None):
    """The response dict for up to `room` of `rows`, and as many as fit one message to the
    meter (work_size), marked delivered; the room the meter has left is kept for pushes.
    Bound to `req` (its nonce, and its connection nonce over MQTT), or, for a push, to the
    meter's connection nonce `conn`."""
    if req is not None:
        device, binding = req.device, bind(req.device, req.nonce, req.conn)
    else:
        binding = bind(device, conn=conn)
    dev = db.one("SELECT d.epoch, d.ack, d.transport, d.room, d.poll, r.rid, r.next_key "
                 "FROM devices d LEFT JOIN rekeys r ON r.device = d.id WHERE d.id = ?", device)
    fetch = req is not None and req.fetch is not None
    sent = _fit(hub, rows[:room], dev["transport"], fetch, now)
    seqs = workq.mark_delivered(db, sent, now)
    if dev["room"] != max(0, room - len(sent)):     # unchanged: no write, no commit
        devices.set_room(db, device, room - len(sent))
    now_s = hub.now()
    out = dict(binding, epoch=dev["epoch"], ack=dev["ack"] or 0,
               work=[workq.wire(r, key, s) for r, s in zip(sent, seqs)],
               more=len(rows) > len(sent), next=devices.next_for(dev, hub.settings),
               time=now_s, time_ms=int(now_s * 1000))  # time_ms: exact on a float32 meter
    said = key_rotation.directive(db, device, dev)
    if said is not None:        # a key rotation: the head-end holds the new key too
        out["rekey"] = said
    return out


def _fit(hub, rows, transport, fetch, now):
    """The leading `rows` that fit one message. Work that cannot fit even alone (queued
    before the meter changed transport) ends `rejected`, never sent."""
    budget, used = work_size.budget(transport, fetch), 0
    sent = []
    for row in rows:
        size = work_size.row_bytes(row)
        if size > work_size.budget(transport):
            outcomes.settle(hub, row, "rejected", now, None, work_size.refusal(
                size, transport, row["device"]))
            continue
        if used + size > budget:
            break
        used += size
        sent.append(row)
    return sent
