# A key rotation on the meter's MQTT link (firmware/mqtt_comms.py with rekey.py), without a
# network, under each interpreter, for host_tests/test_mqtt_rekey_link.py (argv: state dir;
# stdin: {"head_pub", "rid"}). Prints one JSON document of what the link did at each step:
# the broker password it logs in with and which it tries after a refused login, the CONNACK
# refusal read before the close that follows it, the key it signs ups and presence with, the
# downs it takes under either key, and the commit on a down under the new key.

import asyncio
import json
import sys
from binascii import hexlify

import envelope
import mqtt_comms as M
import rekey
from clock import Clock
from inbox import Inbox
from mqtt_wire import LinkError
from ops import Dispatcher
from outbox import Outbox

OLD = b"o" * 32


def password(key):
    return envelope.sign(key, b"mqtt-password").encode()


def up_key(c, keys):
    """The key (hex) the up just published was signed with, among keys."""
    tx = bytes(c.session.link.take())
    i = tx.find(b"{")
    raw = tx[i:]
    sig = tx[i - 65:i - 1].decode()
    for k in keys:
        if envelope.same(sig, envelope.sign(k, raw)):
            return hexlify(k).decode()
    return None


def down(c, key, body):
    raw = json.dumps(body).encode()
    c._down(envelope.sign(key, raw).encode() + b" " + raw)


async def refused_connack(s, code):
    """The broker's CONNACK refusal, then its close, both before the meter looks."""
    s.reset()
    s.link.feed(bytes((0x20, 2, 0, code)))
    s.rx_error = LinkError("the broker closed the connection")
    try:
        await s._connack()
    except LinkError as exc:
        return str(exc)
    return None


class Stop(BaseException):
    """Ends a scripted run() (its `except Exception` lets it through)."""


def scripted_run(c, outcomes, keys):
    """c.run() against a scripted two-node broker: each login attempt takes the next outcome
    ("refused": CONNACK 5, not authorised; "lost": taken, then the link drops; "stop").
    Returns [node, key name of the password] per attempt and the wait before each next."""
    s = c.session
    s.brokers = [("n1", 1883), ("n2", 1883)]
    s.broker_i, (s.host, s.port) = 0, s.brokers[0]
    tried, waits = [], []
    real_sleep = asyncio.sleep

    async def attempt():
        login = c.login_password()
        tried.append([s.host, [name for name, k in keys if password(k) == login][0]])
        outcome = outcomes[len(tried) - 1]
        if outcome == "stop":
            raise Stop()
        if outcome == "refused":
            s.refused_code = 5
            raise LinkError("broker refused the connection: not authorised")
        s.connected, s.connected_at, s.refused_code = True, M.ticks_ms(), None
        raise LinkError("the broker closed the connection")

    async def sleep(t):
        waits.append(t)
        await real_sleep(0)

    c._connected = attempt
    asyncio.sleep = sleep
    try:
        asyncio.run(c.run())
    except Stop:
        pass
    finally:
        asyncio.sleep = real_sleep
        del c._connected
    return {"tried": tried, "waits": waits}


def main(state):
    doc = json.loads(sys.stdin.read())
    out = {}
    outbox = Outbox(state + "/outbox")
    inbox = Inbox(state + "/inbox")
    disp = Dispatcher(None, OLD, outbox, inbox, device_id="meter-x")
    c = M.MqttComms("meter-x", OLD, "127.0.0.1", 0, outbox, inbox, disp, Clock(),
                    keepalive=20)
    c.session.connect_packet()                  # umqtt writes into the link from here on
    c.session.link.take()
    committed = []

    def commit(new):
        committed.append(hexlify(new).decode())
        c.key = disp.key = new

    rk = rekey.Rekey(state + "/rekey", "meter-x", commit)
    c.rekey = disp.rekey = rk
    out["login_plain"] = c.login_password() == password(OLD)

    rk.start(doc["rid"], doc["head_pub"])
    new = rk.new_key()
    out["new_key"] = hexlify(new).decode()
    out["login_before_told"] = c.login_password() == password(OLD)
    c.send_up(0)
    out["up_before_told"] = up_key(c, (OLD, new))

    # a CONNACK refusal is read even when the close arrived with it
    out["refusal"] = asyncio.run(refused_connack(c.session, 5))
    out["refused_code"] = c.session.refused_code
    c.session.client.sock = c.session.link
    c.login_refused(c.session.refused_code)
    out["login_after_refusal"] = c.login_password() == password(new)
    c.login_refused(None)                       # a link that failed otherwise: no change
    out["login_after_other_failure"] = c.login_password() == password(new)
    c.login_refused(4)
    out["login_after_second_refusal"] = c.login_password() == password(OLD)
    out["quick"] = M.OTHER_KEY_S
    out["run"] = scripted_run(c, ["lost", "refused", "refused", "lost", "refused", "stop"],
                              (("old", OLD), ("new", new)))

    # the head-end's answer, under the old key, says it holds the new one
    c.send_up(0)
    c.session.link.take()
    down(c, OLD, {"v": 2, "dir": "down", "device": "meter-x", "re": c.sent_nonce,
                  "rekey": {"rid": doc["rid"], "check": rekey.check_value(new)}})
    out["told"] = bool(rk.pending and rk.pending.get("told"))
    c.send_up(0)
    out["up_after_told"] = up_key(c, (OLD, new))
    out["presence_after_told"] = json.loads(c.presence_body("available", ""))["sig"] == (
        envelope.sign(new, envelope.presence_message("meter-x", c.conn, c.presence_n,
                                                      "available", "")))
    # a down under neither key, then a push under the new one: the rotation commits
    exchanges = c.exchanges
    down(c, b"x" * 32, {"v": 2, "dir": "down", "device": "meter-x", "conn": c.conn})
    out["forged_taken"] = c.exchanges - exchanges
    down(c, new, {"v": 2, "dir": "down", "device": "meter-x", "conn": c.conn})
    out["committed"] = committed
    out["pending_after"] = rk.pending
    out["login_after_commit"] = c.login_password() == password(new)
    out["login_other_after_commit"] = c.login_other
    # the old key is gone: its down is refused
    exchanges = c.exchanges
    down(c, OLD, {"v": 2, "dir": "down", "device": "meter-x", "conn": c.conn})
    out["old_taken_after"] = c.exchanges - exchanges
    # one key again: a refusal is a failure like any other (back-off, the next node)
    out["run_one_key"] = scripted_run(c, ["lost", "refused", "stop"], (("new", new),))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
