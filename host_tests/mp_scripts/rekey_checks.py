# firmware/rekey.py (and the dispatcher's `rotate_key`) under each interpreter, for
# host_tests/test_rekey.py. Reads {"dir", "head_pub", "rid"} on stdin; prints one JSON
# document of what happened at each step (the test checks the key against `cryptography`).

import json
import sys
from binascii import hexlify

import envelope
import fuzz_parsers as fz
import ops
import rekey
from inbox import Inbox


def error(fn, *args):
    try:
        fn(*args)
    except ValueError as e:
        return "ValueError: %s" % e
    except Exception as e:  # noqa: BLE001 - the test rejects anything else
        return "raised %s: %s" % (type(e).__name__, e)
    return None


def item(n, op, args, key, role="utility"):
    w = {"id": "w-%d" % n, "device": fz.DEVICE, "seq": n, "op": op, "role": role,
         "expires": 2 * 10 ** 9, "from": "token:uma", "args": json.dumps(args)}
    w["sig"] = envelope.sign(key, envelope.work_message(w))
    return w


def main():
    doc = json.loads(sys.stdin.read())
    d, rid, head = doc["dir"], doc["rid"], doc["head_pub"]
    out = {}
    committed = []
    outbox = fz.FakeOutbox()
    app = fz.FakeApp(outbox)
    disp = ops.Dispatcher(app, fz.KEY, outbox, Inbox(d + "/inbox"))
    app.rekey = disp.rekey = rekey.Rekey(d + "/rekey", fz.DEVICE, committed.append)
    # the guarded op, signed with the current key; a peer or an operator may not run it
    out["peer"] = disp.handle(item(1, "rotate_key", {"rid": rid, "pub": head}, fz.KEY, "peer"))
    out["operator"] = disp.handle(item(2, "rotate_key", {"rid": rid, "pub": head}, fz.KEY,
                                       "operator"))
    out["run"] = disp.handle(item(3, "rotate_key", {"rid": rid, "pub": head}, fz.KEY))
    out["result"] = outbox.items[-1][1]
    pub = app.rekey.pending["pub"]
    out["same_again"] = app.rekey.start(rid, head) == pub
    out["replayed"] = disp.handle(item(3, "rotate_key", {"rid": rid, "pub": head}, fz.KEY))
    out["errors"] = [error(app.rekey.start, "ZZ", head),
                     error(app.rekey.start, "ab" * 8, "04" + "00" * 64),
                     error(app.rekey.start, "ab" * 8, "04" + "1" * 128),
                     error(app.rekey.start, "ab" * 8, 7)]
    out["still_pending"] = app.rekey.pending["pub"] == pub
    # a power cut: the record is read back
    rk = rekey.Rekey(d + "/rekey", fz.DEVICE, committed.append)
    new = rk.new_key()
    out["new_key"] = hexlify(new).decode()
    out["reloaded"] = rk.pending == app.rekey.pending
    out["keys_before_told"] = [hexlify(k).decode() for k in rk.keys(fz.KEY)]
    out["sign_before_told"] = hexlify(rk.sign_key(fz.KEY)).decode()
    # work under the new key is accepted while both are held
    disp.rekey = rk
    out["new_key_work"] = disp.handle(item(4, "read", {}, new, "operator"))
    rk.answered({"rekey": {"rid": "cd" * 8, "check": rekey.check_value(new)}}, fz.KEY, fz.KEY)
    out["other_rid_ignored"] = not rk.pending["told"]
    rk.answered({"rekey": {"rid": rid, "check": rekey.check_value(new)}}, fz.KEY, fz.KEY)
    out["told"] = rekey.Rekey(d + "/rekey", fz.DEVICE).pending["told"]
    out["sign_after_told"] = hexlify(rk.sign_key(fz.KEY)).decode()
    rk.answered({}, new, fz.KEY)            # a response signed with the new key
    out["committed"] = [hexlify(k).decode() for k in committed]
    out["after_commit"] = rekey.Rekey(d + "/rekey", fz.DEVICE).pending
    # after the commit, an item signed with the old key (a stolen key, a replay) is refused
    disp.key = new
    out["old_key_work"] = disp.handle(item(5, "rotate_key", {"rid": "ef" * 8, "pub": head},
                                           fz.KEY))
    out["old_key_reason"] = outbox.items[-1][1].get("reason")
    # another head-end key (someone else answered the rotation): the old key is kept
    rk2 = rekey.Rekey(d + "/rekey2", fz.DEVICE, committed.append)
    rk2.start("ab" * 8, head)
    rk2.answered({"rekey": {"rid": "ab" * 8, "check": "0" * 16}}, fz.KEY, fz.KEY)
    out["mismatch"] = [rk2.pending, rk2.last_error]
    # a commit written to the config before the record went: settled at start
    rk3 = rekey.Rekey(d + "/rekey3", fz.DEVICE)
    rk3.start("ab" * 8, head)
    k3 = rk3.new_key()
    rk3 = rekey.Rekey(d + "/rekey3", fz.DEVICE)
    rk3.settled(k3)
    out["settled"] = rekey.Rekey(d + "/rekey3", fz.DEVICE).pending
    # a damaged record is ignored (the old key goes on working)
    with open(d + "/rekey4", "wb") as f:
        f.write(b"BC1garbage")
    out["damaged"] = rekey.Rekey(d + "/rekey4", fz.DEVICE).pending
    print(json.dumps(out))


main()
