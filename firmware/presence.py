# The meter's own statement of presence; every change is queued for the head-end.

STATES = ("available", "available_restricted", "active", "available_off", "unavailable")


class Presence:
    def __init__(self, outbox, state="available", note=""):
        self.outbox = outbox
        self.state = state if state in STATES else "available"
        self.note = note
        self.on_change = None  # callback after a change (the app keeps it on flash)

    def set(self, state, note=""):
        if state not in STATES:
            raise ValueError("presence must be one of %s" % ", ".join(STATES))
        if not isinstance(note, str) or len(note) > 200:
            raise ValueError("note must be text of at most 200 characters")
        if state == "available_restricted" and not note:
            raise ValueError("available_restricted needs a note saying what is restricted")
        if (state, note) == (self.state, self.note):
            return False
        self.state = state
        self.note = note
        if self.on_change is not None:
            self.on_change()
        self.announce()
        return True

    def announce(self):
        body = {"state": self.state}
        if self.note:
            body["note"] = self.note
        self.outbox.offer("presence", body)
