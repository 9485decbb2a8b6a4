# Chooses the firmware to run; main.py calls select() before importing anything else.
# Never replaced by an update, imports no firmware module: a bad release cannot break it.
#
# base/fw/current.json (written here and by updater.py, always write-then-rename):
#   {"version": V, "previous": P, "probation": bool, "boots": n, "reason": "", "failed": F}
# version None (or no pointer) runs the factory modules (outside fw/); otherwise base/fw/V
# goes first on sys.path. A boot on probation with boots >= 1 means the last boot of V
# never confirmed it (updater.py does, after a healthy exchange): the pointer goes back to
# `previous`, keeping why in `reason` and V in `failed`.

import json
import os
import sys

WDT_REASON = "watchdog reset"
PROBATION_REASON = "no healthy exchange within probation"

selected = None  # what the last select() did (see select)


def _join(base, name):
    if not base:
        return name
    return base + name if base.endswith("/") else base + "/" + name


def fw_dir(base):
    return _join(base, "fw")


def pointer_path(base):
    return _join(fw_dir(base), "current.json")


def read_pointer(base):
    """The pointer dict, None when there is none; ValueError when it is damaged."""
    try:
        with open(pointer_path(base)) as f:
            text = f.read()
    except OSError:
        return None
    p = json.loads(text)  # ValueError when damaged
    v = p.get("version") if isinstance(p, dict) else 0
    if not (v is None or isinstance(v, str)) or not isinstance(p.get("boots", 0), int):
        raise ValueError("pointer damaged")
    return p


def write_pointer(base, pointer):
    path = pointer_path(base)
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(pointer))
    os.rename(path + ".tmp", path)


def _watchdog_reset():
    try:
        import machine
        return machine.reset_cause() == machine.WDT_RESET
    except Exception:  # the unix port and CPython have no machine.reset_cause
        return False


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def select(base):
    """Pick the firmware under `base` (the flash root: "" or "/" on a board). Returns
    {"version": V or None (factory), "rolled_back": reason or None, "failed": V or None,
     "error": what was wrong with the pointer or None}; never raises."""
    global selected
    out = {"version": None, "rolled_back": None, "failed": None, "error": None}
    fw = fw_dir(base)
    for entry in list(sys.path):  # a restart in the same process (the simulator)
        if isinstance(entry, str) and entry.startswith(_join(fw, "")):
            sys.path.remove(entry)
    try:
        p = read_pointer(base)
        if p is not None and p.get("probation") and p.get("boots", 0) >= 1:
            reason = WDT_REASON if _watchdog_reset() else PROBATION_REASON
            p = {"version": p.get("previous"), "previous": None, "probation": False,
                 "boots": 0, "reason": reason, "failed": p.get("version")}
            write_pointer(base, p)
            out["rolled_back"] = reason
            out["failed"] = p["failed"]
        elif p is not None and p.get("probation"):
            p["boots"] = p.get("boots", 0) + 1
            write_pointer(base, p)
        version = p.get("version") if p is not None else None
        if version is not None:
            path = _join(fw, version)
            if not _exists(path):
                raise ValueError("fw/%s is missing" % (version,))
            sys.path.insert(0, path)
            out["version"] = version
    except Exception as exc:  # never a boot loop: run the factory firmware and say why
        out["version"] = None
        out["error"] = "firmware pointer unusable (%s): factory firmware" % (exc,)
    selected = out
    return out
