"""Move one thread into a lab's network namespace (ip netns): its sockets are then that
namespace's, while the rest of the process stays where it is. For clients that must run
in the test or bench process itself (an XMPP operator's client in `out`, a baseline echo
client in a site), where a helper process would hide what they measure.

    threading.Thread(target=lambda: (netns.enter(lab.nsname("out")), run_client())).start()
"""

import ctypes
import os

CLONE_NEWNET = 0x40000000


def enter(name):
    """Move the calling thread into network namespace `name` (/var/run/netns/NAME)."""
    fd = os.open("/var/run/netns/%s" % name, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
    finally:
        os.close(fd)
