# The firmware's release version (MAJOR.MINOR.PATCH). A signed release ships its own
# version.py; the factory firmware is VERSION below.

VERSION = "0.1.0"


def parse(text):
    """(major, minor, patch) of a MAJOR.MINOR.PATCH string, or None when it is not one."""
    if not isinstance(text, str) or len(text) > 32:
        return None
    parts = text.split(".")
    if len(parts) != 3:
        return None
    out = []
    for p in parts:
        if not p or len(p) > 9 or not p.isdigit() or (len(p) > 1 and p[0] == "0"):
            return None
        out.append(int(p))
    return tuple(out)


def newer(offered, running):
    """True when version `offered` is strictly newer than `running` (both valid)."""
    return parse(offered) > parse(running)
