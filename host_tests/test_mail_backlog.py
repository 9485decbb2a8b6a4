"""The email campaign 1 finding (docs/reliability.md, "readings lost behind later ones over
email"), replayed as the campaign makes it happen: a meter on email killed -9 a hundred
times, its lives as long as the campaign's (0.4-2.8 s, one in four 5-9 s; offline ones cut
for 1-3 s plus `hold` readings), a reading a second, a presence at each start, and a mail
round trip of 2 or 2.5 s, so half the lives or more never see an answer (the campaign
measured 54 of 101 at a load of 10-13). The real outbox (held readings, 8 KiB segments,
its 64 KiB overflow policy) and the real mail link's batch (`MailComms.batch`, what one
request mail carries); acks as the
head-end computes them (headend/ingest.advance_ack: from the request's lowest seq, then
contiguous), sent in the answer and applied only if the answer arrives in the same life.

The oracle is the campaign's ledger: every record on flash at a kill is stored by the
head-end in the end. With 4 KiB request mails (the link's old batch, 16 items) the backlog
outgrew what the requests carried, the outbox filled, and the oldest readings on flash were
dropped for room before any mail had carried them (reported in `readings dropped (outbox
full)` notices, yet lost: seqs 963-966, 1058, 1063-1065 in the campaign on 2026-12-07).
With 16 KiB (32 items), as the other links send, the outbox may still fill when most
answers come too late, but what it drops then is readings the head-end already stored."""

import os
import random

import pytest
from mail_comms import MailComms
from outbox import Outbox
from outbox_segments import records

pytestmark = pytest.mark.unit

SEND_EVERY_S = 5        # the rig's mail_send_s: new readings go at most this often
HOLD = 5                # the campaign's persist_s / report_s (live_config.outbox_hold)
READING = {"t": 1796616311, "t_ms": 304, "pad": "r" * 650}     # ~715 bytes, as measured


def _link(outbox):
    return MailComms("pl-1", b"k" * 32, "mail.test", "pl-1@mail.test", "pw", "he@mail.test",
                     outbox, None, None, None, None)


def _on_flash(d):
    out = []
    for name in sorted((n for n in os.listdir(d) if n.endswith(".seg")),
                       key=lambda n: int(n[:-4])):
        with open(os.path.join(d, name), "rb") as f:
            out += [item["seq"] for item, _ in records(f, 4096) if item is not None]
    return out


def _campaign(d, batch_of, rtt_s, lives=100, seed="20250105-1"):
    """The lives; returns (seqs on flash at some kill, seqs stored, readings dropped)."""
    rng = random.Random(seed)
    stored, ack, seen, dropped = set(), 0, set(), 0

    def send(o, batch):
        nonlocal ack
        seqs = [i["seq"] for i in o.peek(batch.items, batch.bytes)]
        stored.update(seqs)                 # the mail reached the head-end, whatever follows
        if seqs:
            ack = max(ack, min(seqs) - 1)
        while ack + 1 in stored:
            ack += 1
        return ack

    for n in range(lives + 1):
        last = n == lives                   # the campaign's last life runs until all is in
        offline = n % 4 == 1 or rng.random() < 0.2
        online = rng.uniform(0.4, 2.8) if rng.random() >= 0.25 else rng.uniform(5, 9)
        online = 600 if last else online
        end = online + (rng.uniform(1, 3) + HOLD if offline and not last else 0)
        o = Outbox(d, hold=HOLD, seg_bytes=8192, max_bytes=64 * 1024)
        batch = batch_of(o)
        o.append("presence", {"state": "available"})
        answer_at, answer, sent_at, sent_next = rtt_s, send(o, batch), 0.0, o.next_seq
        t = 0.0
        while t < end:
            t = round(t + 0.5, 1)
            if t == int(t):
                o.append("reading", READING)
            if answer_at is not None and t >= answer_at:
                if t > online:              # cut off: the answer never arrives
                    answer_at = None
                    continue
                before = o.acked
                o.ack(answer)
                answer_at = None
                if o.acked > before and o.depth():
                    answer_at, answer, sent_at = t + rtt_s, send(o, batch), t
                    sent_next = o.next_seq
            elif answer_at is None and t <= online and o.next_seq != sent_next \
                    and t - sent_at >= SEND_EVERY_S:
                answer_at, answer, sent_at, sent_next = t + rtt_s, send(o, batch), t, o.next_seq
        dropped += o.dropped_overflow
        seen.update(s for s in _on_flash(d) if s > o.acked)     # kill -9: the ledger's look
    return seen, stored, dropped


@pytest.mark.parametrize("rtt_s", [2.0, 2.5])
def test_request_mails_keep_up_with_a_meter_killed_every_few_seconds(tmp_path, rtt_s):
    seen, stored, dropped = _campaign(str(tmp_path / "outbox"), lambda o: _link(o).batch,
                                      rtt_s)
    assert seen and seen <= stored, ("on flash at a kill, never stored (%d readings dropped "
                                     "for room)" % dropped, sorted(seen - stored)[:20])
