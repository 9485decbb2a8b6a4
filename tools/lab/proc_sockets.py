"""The sockets a process tree listens on, read from /proc as `ss -lntu` would show them: the
e2e labs check that a meter, which only calls out, holds none."""

import os
import socket
import struct
from collections import namedtuple
from contextlib import suppress

Sock = namedtuple("Sock", "proto addr port inode")


def descendants(pid):
    kids = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        with suppress(OSError, IndexError), open(f"/proc/{d}/stat") as f:
            kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
    found, todo = [], [pid]
    while todo and len(found) < 10000:
        found.append(todo.pop())
        todo.extend(kids.get(found[-1], []))
    return found


def address(hexaddr):
    words = b"".join(struct.pack("=I", int(hexaddr[i:i + 8], 16))
                     for i in range(0, len(hexaddr), 8))
    return socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)


def socket_inodes(pids):
    """The inodes of the sockets these processes hold open (their fds' `socket:[N]` links)."""
    inodes = set()
    for p in pids:
        with suppress(OSError):
            links = [os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")]
            inodes.update(int(link[8:-1]) for link in links if link.startswith("socket:["))
    return inodes


def inet_rows(pid):
    """(proto, local, remote, state, inode) of every row of /proc/<pid>/net/{tcp,udp}[6]:
    the sockets of pid's network namespace."""
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        rows = []
        with suppress(OSError), open(f"/proc/{pid}/net/{proto}") as f:
            rows = [row.split() for row in f.read().splitlines()[1:]]
        for r in rows:
            yield proto, r[1], r[2], r[3], int(r[9])


def listening_sockets(pid):
    """TCP sockets in LISTEN and unconnected UDP sockets (what `ss -lntu` shows) held by
    pid or its descendants."""
    inodes = socket_inodes(descendants(pid))
    socks = []
    for proto, local, remote, state, inode in inet_rows(pid):
        listening = state == "0A" if proto.startswith("tcp") else remote.endswith(":0000")
        if listening and inode in inodes:
            host, port = local.split(":")
            socks.append(Sock(proto, address(host), int(port, 16), inode))
    return socks


def peers(pid):
    """(proto, state as /proc spells it, remote address, remote port) of every inet socket
    pid itself holds: where a meter's connections go."""
    inodes = socket_inodes([pid])
    return [(proto, state, address(remote.split(":")[0]), int(remote.split(":")[1], 16))
            for proto, _, remote, state, inode in inet_rows(pid) if inode in inodes]
