# What the meter lost, told to the head-end as `notice` items (docs/reliability.md): damage
# found at start-up, readings a full outbox dropped, sample blocks metering was late for, and
# metering steps a full heap made it skip (memory_guard.py). Each count goes out once; one
# the outbox refused is offered again with the next reading.


def startup_notices(outbox, energy_store, inbox, kept):
    for what, count in (("outbox records damaged", outbox.dropped_corrupt),
                        ("energy slots damaged", energy_store.damaged),
                        ("outbox seq/acked files damaged", outbox.damaged)):
        if count:
            outbox.offer("notice", {"what": what, "count": count})
    if inbox.damaged:
        outbox.offer("notice", {"what": "inbox damaged", "count": 1})
    if kept.damaged:
        outbox.offer("notice", {"what": "relay/presence record damaged", "count": 1})


class LossNotices:
    """Running losses since the last notice of each kind."""

    def __init__(self, outbox):
        self.outbox = outbox
        self.told = {}

    def _tell(self, what, total):
        new = total - self.told.get(what, 0)
        if new > 0 and self.outbox.offer("notice", {"what": what, "count": new}) is not None:
            self.told[what] = total

    def check(self, board, memory_errors):
        self._tell("readings dropped (outbox full)", self.outbox.dropped_overflow)
        # the app was late for a block: a gap in the metering
        self._tell("sample blocks lost (metering late)", getattr(board, "overruns", 0))
        self._tell("metering steps skipped (heap full)", memory_errors)
