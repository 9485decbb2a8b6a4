# The meter's mail modules on any interpreter, for host_tests/test_mail_transport.py: the
# MIME layout (firmware/mail_mime.py) and the SMTP, POP3 and IMAP clients against scripted
# servers written as the protocols' RFCs have them (no network). Prints one JSON line.

import asyncio
import json

import imap_idle
import mail_mime
import pop3_client
import smtp_client
from fuzz_mail import FakeConn
from mail_line import MailError

PAYLOAD = b"0" * 64 + b' {"v": 2, "dir": "down", "pad": "' + b"x" * 300 + b'"}'


def pop3_server(box):
    deleted = []

    def serve(line):
        words = line.strip().split()
        cmd = words[0].upper()
        if cmd in (b"USER", b"PASS"):
            return b"+OK\r\n"
        if cmd == b"STAT":
            return ("+OK %d %d\r\n" % (len(box), sum(len(m) for m in box))).encode()
        n = int(words[1]) if len(words) > 1 else 0
        if cmd == b"LIST":
            return ("+OK %d %d\r\n" % (n, len(box[n - 1]))).encode()
        if cmd == b"RETR":
            text = box[n - 1].replace(b"\r\n", b"\n")
            lines = (text[:-1] if text[-1:] == b"\n" else text).split(b"\n")
            body = b"\r\n".join(b"." + ln if ln[:1] == b"." else ln for ln in lines)
            return b"+OK\r\n" + body + b"\r\n.\r\n"
        if cmd == b"DELE":
            deleted.append(n)
            return b"+OK\r\n"
        if cmd == b"QUIT":
            return b"+OK bye\r\n"
        return b"-ERR what\r\n"
    return serve, deleted


def imap_server(box, lie=0, arrive=None):
    """box: {uid: raw}; lie: bytes added to every literal's announced size; arrive: {uid:
    raw} delivered while the first mail's body is fetched (announced by an EXISTS)."""
    state = {"expunged": [], "flagged": []}

    def serve(line):
        if line == b"DONE\r\n":
            return state.pop("idle") + b" OK idle done\r\n"
        tag, rest = line.strip().split(b" ", 1)
        if rest.startswith(b"UID SEARCH"):
            return (b"* SEARCH " + b" ".join(str(u).encode() for u in sorted(box))).strip() \
                + b"\r\n" + tag + b" OK\r\n"
        if rest.startswith(b"UID FETCH") and b"RFC822.SIZE" in rest:
            out = b"".join(("* %d FETCH (UID %d RFC822.SIZE %d FLAGS (\\Recent))\r\n"
                            % (i + 1, u, len(box[u]))).encode()
                           for i, u in enumerate(sorted(box)))
            return out + tag + b" OK\r\n"
        if rest.startswith(b"UID FETCH"):
            uid = int(rest.split()[2])
            raw = box[uid]
            news = b""
            if arrive:
                box.update(arrive)
                arrive.clear()
                news = b"* %d EXISTS\r\n" % len(box)
            return (("* 1 FETCH (UID %d BODY[] {%d}\r\n" % (uid, len(raw) + lie)).encode()
                    + raw + b")\r\n" + news + tag + b" OK\r\n")
        if rest.startswith(b"UID STORE"):
            state["flagged"].append(int(rest.split()[2]))
            return tag + b" OK\r\n"
        if rest == b"EXPUNGE":
            for u in state["flagged"]:
                box.pop(u, None)
            state["expunged"] += state["flagged"]
            state["flagged"] = []
            return b"* 1 EXPUNGE\r\n" + tag + b" OK\r\n"
        if rest == b"IDLE":
            state["idle"] = tag
            return b"+ idling\r\n* 3 EXISTS\r\n"
        return tag + b" OK\r\n"             # LOGIN, SELECT
    return serve, state


def run(coro):
    return asyncio.run(coro)


def error_of(fn, *args):
    try:
        fn(*args)
        return None
    except (mail_mime.MimeError, MailError) as exc:
        return str(exc)


def mime_checks(r):
    raw = mail_mime.compose("m1@mail.test", "headend@mail.test", "m1", 42, "n0nce", PAYLOAD)
    hdrs, got = mail_mime.parse(raw)
    r["roundtrip"] = got == PAYLOAD and hdrs[b"x-bc-seq"] == b"42"
    head, body = mail_mime.split(raw)
    rewrapped = head + b"\n\n" + b"".join(body.split()) + b"\n"   # one long line, bare LF
    r["rewrapped"] = mail_mime.parse(rewrapped)[1] == PAYLOAD
    relayed = (b"Received: from a\r\n\tby b\r\nReceived: from c\r\n\tby d\r\n" + raw)
    r["relayed"] = mail_mime.parse(relayed)[1] == PAYLOAD
    part = head[head.find(b"Content-Type"):] + b"\r\n\r\n" + body
    footer = (b"From: m1@mail.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
              b'boundary="b1"\r\n\r\npreamble\r\n--b1\r\n' + part + b"\r\n--b1\r\n"
              b"Content-Type: text/plain\r\n\r\nsent by a relay with a footer\r\n--b1--\r\n")
    r["footer"] = mail_mime.parse(footer)[1] == PAYLOAD
    r["errors"] = [error_of(mail_mime.parse, x) for x in (
        b"X" * (mail_mime.MAX_MAIL + 1),
        b"no blank line",
        head + b"\r\n\r\n" + body[:-3] + b"!!\r\n",
        head.replace(b"base64", b"8bit") + b"\r\n\r\n" + body,
        b"Content-Type: text/plain\r\nContent-Type: " + mail_mime.TYPE + b"\r\n\r\nQUFB\r\n",
        b" folded: first\r\n\r\nx",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: "
        b"multipart/mixed; boundary=c\r\n\r\n--c--\r\n--b--\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--\r\n",
        b"Content-Type: " + mail_mime.TYPE + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"QUFB" * (mail_mime.MAX_PAYLOAD // 3 + 2),
    )]
    r["envelope"] = error_of(mail_mime.envelope_of, b"short sig {}")


def smtp_checks(r):
    replies = [b"220 hi\r\n", b"250-hello\r\n250 AUTH PLAIN\r\n", b"235 ok\r\n", b"250 ok\r\n",
               b"250 ok\r\n", b"354 go\r\n", b"250 queued\r\n", b"221 bye\r\n"]
    conn = FakeConn(lambda line: replies.pop(0), replies.pop(0))
    run(smtp_client.submit(conn, "m1@mail.test", "pw", "m1@mail.test", "he@mail.test",
                           b"A: b\r\n\r\n.starts with a dot\r\n"))
    r["smtp_data"] = conn.sent[5].decode()
    refused = [b"220 hi\r\n", b"250 hello\r\n", b"535 5.7.8 authentication failed\r\n"]
    conn = FakeConn(lambda line: refused.pop(0), refused.pop(0))
    try:
        run(smtp_client.submit(conn, "m1@x.y", "bad", "m1@x.y", "he@x.y", b"A: b\r\n\r\nx"))
        r["smtp_refused"] = None
    except MailError as exc:
        r["smtp_refused"] = str(exc)
    r["smtp_inject"] = error_of(smtp_client._address, "m1@x>\r\nRCPT TO:<evil@x")


def pop3_checks(r):
    good = mail_mime.compose("he@x.y", "m1@x.y", "m1", 1, "n", PAYLOAD)
    dotted = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n"
    box = [good, b"X" * 5000, dotted]
    serve, deleted = pop3_server(box)
    got = []
    conn = FakeConn(serve, b"+OK ready\r\n")
    r["pop3_counts"] = list(run(pop3_client.collect(conn, "m1", "pw", got.append, 4096)))
    r["pop3_deleted"] = deleted
    r["pop3_bodies"] = [got[0] == good, got[1] == dotted]
    conn = FakeConn(lambda line: b"-ERR [AUTH] failed\r\n", b"+OK ready\r\n")
    r["pop3_refused"] = error_of(lambda: run(pop3_client.collect(conn, "m1", "x", got.append,
                                                                 4096)))


def imap_checks(r):
    good = mail_mime.compose("he@x.y", "m1@x.y", "m1", 1, "n", PAYLOAD)
    box = {3: good, 7: b"Y" * 9000, 9: b"junk\r\n\r\njunk"}
    serve, state = imap_server(box)
    got = []
    conn = FakeConn(serve, b"* OK ready\r\n")
    client = imap_idle.Imap(conn, 4096)
    run(client.login("m1@x.y", "pw"))
    r["imap_counts"] = list(run(client.drain(got.append)))
    r["imap_bodies"] = [got[0] == good, got[1] == box.get(9, b"junk\r\n\r\njunk")]
    r["imap_expunged"] = sorted(state["expunged"])
    r["imap_idle_new"] = run(client.idle(5, lambda: False))
    # a mail delivered in the middle of a drain: taken by the same drain, not left for an
    # IDLE that would never announce it again
    serve, state = imap_server({3: good}, arrive={5: good})
    client = imap_idle.Imap(FakeConn(serve, b"* OK ready\r\n"), 4096)
    run(client.login("m1@x.y", "pw"))
    r["imap_arrived"] = list(run(client.drain(got.append))) + sorted(state["expunged"])
    serve, _ = imap_server({1: b"Z" * 100}, lie=10 ** 6)   # a literal larger than announced
    client = imap_idle.Imap(FakeConn(serve, b"* OK ready\r\n"), 4096)
    r["imap_literal"] = error_of(lambda: run(client.drain(got.append)))
    r["fetch_fields"] = [error_of(imap_idle.fetch_fields, x) is None for x in (
        b"* 1 FETCH (UID 4 RFC822.SIZE 10)", b"* 1 FETCH (UID 4", b"* x FETCH (UID 4)",
        b"* 1 FETCH (UID ((((((1))))))", b"* 1 FETCH UID 4)")]
    r["literal_size"] = [error_of(imap_idle.literal_size, x, 100) for x in (
        b"* 1 FETCH (BODY[] {50}", b"* 1 FETCH (BODY[] {500}", b"x {1a}", b"x }")]
    r["search"] = error_of(imap_idle.search_uids, b"* SEARCH 1 2 x")
    r["login_quote"] = error_of(imap_idle._quoted, 'pw"\r\nA1 DELETE INBOX')


def main():
    r = {}
    for checks in (mime_checks, smtp_checks, pop3_checks, imap_checks):
        checks(r)
    print(json.dumps(r))


main()
