"""`backchannel` with a failpoint for host_tests/test_headend_idempotency.py: a work POST
whose Idempotency-Key starts with `crash-` kills the process with SIGKILL right after its
transaction commits, before the 202 is written.

    python host_tests/mp_scripts/headend_crash_after_commit.py serve --db ... (as backchannel)
"""
import os
import signal
from contextlib import contextmanager

from headend import hub, idempotency
from headend.cli import main

_armed = []
_remember, _tx = idempotency.remember, hub.Hub.tx


def remember(db, operator, key, fp, ref, now):
    _remember(db, operator, key, fp, ref, now)
    if key is not None and key.startswith("crash-"):
        _armed.append(key)


@contextmanager
def tx(self):
    with _tx(self) as db:
        yield db
    if _armed and not self.db.tx_depth:       # the outermost transaction has committed
        os.kill(os.getpid(), signal.SIGKILL)


idempotency.remember = remember
hub.Hub.tx = tx

if __name__ == "__main__":
    main()
