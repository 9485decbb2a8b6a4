# What MqttComms (firmware/mqtt_comms.py) exchanges over its session: the signed up
# request, the answers on down (applied like an HTTP response), presence, the Home Assistant
# state and discovery messages. A mixin: MqttComms holds the state and the session.

import json

import envelope
import ha_discovery as hass
from clock import ticks_diff
from comms import apply_response, new_nonce, request_body, time_refusal


class MqttExchange:
    def _new_connection(self):
        # a random nonce per connection, held in RAM only: no flash write per push
        self.conn = new_nonce()
        self.sent_nonce = None

    def _on_message(self, topic, msg):
        """umqtt's callback; runs inside _process, before umqtt sends the PUBACK."""
        if topic == self.t_down:
            self._down(msg)
        elif topic == hass.STATUS_TOPIC and msg == b"online":
            self.discovery_due = True

    def _down(self, msg):
        i = msg.find(b" ")
        sig, raw = msg[:i], msg[i + 1:]
        try:
            ok = i == 64 and envelope.same(sig.decode(), envelope.sign(self.key, raw))
        except (UnicodeError, ValueError):
            ok = False
        if not ok:
            self.last_error = "response signature does not match; ignored"
            return
        try:
            resp = json.loads(raw)
        except ValueError:
            resp = None
        if not isinstance(resp, dict):
            self.last_error = "response is not a JSON object; ignored"
            return
        if "error" in resp:     # the signed time refusal of our up (docs/protocol.md)
            if self.awaiting is not None and time_refusal(self, resp, self.sent_nonce):
                self.awaiting = None
                self.want_up = True
            return
        # bound (v2): the answer to our latest up, or a push on this very connection
        if not envelope.bound(resp, self.device_id, self.sent_nonce, self.conn):
            self.last_error = "down answers no request of this connection; ignored"
            return
        answer = resp.get("re") is not None
        self.exchanges += 1
        self.last_ok = self.clock.now()
        self.failures = 0
        if answer:
            self.time_refusals = 0
        if answer and self.awaiting is not None:  # it stored what we sent
            self.awaiting = None
            if self.sent_done:
                self.inbox.confirm(self.sent_done)
                self.sent_done = []
        if apply_response(self, resp, answer):
            self.want_up = True
        if self.after_exchange is not None:
            self.after_exchange()


    # --- what to send ---
    def _outbound(self, now):
        if self.discovery_due:
            self.discovery_due = False
            for topic, payload in hass.messages(self.device_id, self.model):
                self._publish(topic, payload, True, 1)
        p = self.presence
        stated = (p.state, p.note) if p is not None else ("available", "")
        if stated != self.sent_presence:
            self.sent_presence = stated
            body = json.dumps({"state": stated[0], "note": stated[1]}).encode()
            self._publish(self.t_presence, body, True, 1)
        if self.reading is not None and (self.state_at is None or
                                         ticks_diff(now, self.state_at) >= self.state_s * 1000):
            r = self.reading()
            if r is not None and r is not self.sent_reading:
                self.sent_reading = r
                self.state_at = now
                self._publish(self.t_state, json.dumps(r).encode(), True, 0)
        if self.awaiting is not None:
            return
        if self.hold_at is not None and ticks_diff(now, self.hold_at) < self.hold_ms:
            return
        every = (self.poll_s if self.poll_s > 0 else self.heartbeat_s) * 1000
        if (self.kicked or self.want_up or self.outbox.next_seq != self.sent_next_seq
                or ticks_diff(now, self.up_at) >= every):
            self._send_up(now)

    def _send_up(self, now):
        _, done, body = request_body(self, 0)
        body["conn"] = self.conn    # pushes on this connection are bound to it
        self.sent_nonce = body["nonce"]
        raw = json.dumps(body).encode()
        self.kicked = self.want_up = False
        self.sent_next_seq = self.outbox.next_seq
        self.sent_done = done
        self.awaiting = self.up_at = now
        self.hold_at = None
        self._publish(self.t_up, envelope.sign(self.key, raw).encode() + b" " + raw, False, 1)
