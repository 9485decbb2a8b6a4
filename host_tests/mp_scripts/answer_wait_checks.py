# The email meter's adaptive answer wait (firmware/mail_comms.py AnswerWait) on any
# interpreter, for host_tests/test_mail_answer_wait.py: the wait after each event of a fixed
# sequence, and a link whose request goes unanswered. Prints one JSON line.

import json

from mail_comms import AnswerWait, MailComms
from mpshim import ticks_add, ticks_ms

# ("s", rtt ms): an answer timed; ("m", 0): a request unanswered
EVENTS = [("s", 2000), ("s", 2400), ("s", 1800), ("s", 30000), ("s", 30000), ("s", 30000),
          ("m", 0), ("m", 0), ("s", 2000), ("s", 2100), ("s", 1900), ("s", 2000), ("s", 2000),
          ("s", 2000), ("s", 2000), ("s", 2000), ("m", 0), ("m", 0), ("m", 0), ("m", 0),
          ("s", 500000), ("s", 0)]


class Box:
    next_seq = 1


def main():
    r = {}
    w = AnswerWait(120)
    r["fresh"] = w.ms()
    waits = []
    for kind, rtt in EVENTS:
        if kind == "s":
            w.sample(rtt)
        else:
            w.missed()
        waits.append(w.ms())
    r["waits"] = waits
    r["events"] = EVENTS
    # a link with a few answers of about 2 s: a request unanswered for 15 s is given up
    # (a failure, a back-off hold), where the fixed wait was answer_s, 120 s
    link = MailComms("m1", b"k" * 32, "mail.test", "m1@mail.test", "pw", "he@mail.test", Box(),
                     None, None, None, None, answer_s=120)
    for rtt in (2000, 2500, 1900):
        link.answer_wait.sample(rtt)
    now = ticks_ms()
    link.awaiting = link.sent_at = ticks_add(now, -14000)
    r["due_at_14s"] = [link.send_due(now), link.awaiting is not None, link.failures]
    link.awaiting = ticks_add(now, -15500)
    r["due_at_15s"] = [link.send_due(now), link.awaiting is not None, link.failures,
                       link.last_error, link.hold_ms > 0]
    r["wait_after_miss"] = link.answer_wait.ms()
    print(json.dumps(r))


main()
