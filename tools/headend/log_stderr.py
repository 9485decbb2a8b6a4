"""Where `backchannel serve` sends the head-end's own log records: stderr, beside uvicorn's."""

import logging
import sys


class Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes, not as it was when serve started:
    an in-process caller (a test capturing output) may have swapped and closed it since."""
    stream = property(lambda self: sys.stderr, lambda self, value: None)


def log_to_stderr(level):
    """The head-end's own loggers (backchannel.*: the MQTT bridge, refused messages, the
    background task) next to uvicorn's; once, however many times serve runs in a process."""
    logger = logging.getLogger("backchannel")
    if not any(isinstance(h, Stderr) for h in logger.handlers):
        handler = Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
