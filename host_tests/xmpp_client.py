"""A real XMPP client for the tests (slixmpp, STARTTLS against the project's CA) in its
own thread and event loop: an operator's phone, or an attacker's account. What arrives is
collected; raw() sends any stanza as is."""

import asyncio
import threading
import time


class Operator:
    """A real XMPP client in its own thread and event loop; what arrives is collected."""

    def __init__(self, jid, password, port, ca, show=None):
        from slixmpp import ClientXMPP
        self.messages, self.presences = [], []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            c = self.client = ClientXMPP(jid, password)
            c.ca_certs = str(ca)
            c.auto_authorize = True
            c.auto_subscribe = True

            def started(_):
                c.send_presence(pshow=show)
                c.get_roster()
                ready.set()
            c.add_event_handler("session_start", started)
            c.add_event_handler("message", lambda m: self.messages.append(
                (m["from"].bare, m["body"])))
            c.add_event_handler("presence", lambda p: self.presences.append(
                (p["from"].bare, p["type"], p["show"], p["status"])))
            c.connect("127.0.0.1", port)
            self.loop.run_forever()
        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(20), "%s did not log in" % jid

    def say(self, to, body):
        self.loop.call_soon_threadsafe(lambda: self.client.send_message(mto=to, mbody=body,
                                                                        mtype="chat"))

    def wait_message(self, sender, contains, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s, body in list(self.messages):
                if s == sender and contains in body:
                    return body
            time.sleep(0.05)
        raise AssertionError("no message from %s with %r: %s" % (sender, contains,
                                                                 self.messages))

    def wait_presence(self, sender, show, status=None, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s, _type, sh, st in list(self.presences):
                if s == sender and sh == show and (status is None or st == status):
                    return
            time.sleep(0.05)
        raise AssertionError("no presence %s/%s from %s: %s" % (show, status, sender,
                                                                 self.presences))

    def close(self):
        self.loop.call_soon_threadsafe(self.client.disconnect)

    def raw(self, xml):
        """Send a stanza exactly as written (an attacker's hand-made one)."""
        self.loop.call_soon_threadsafe(lambda: self.client.send_raw(xml))
