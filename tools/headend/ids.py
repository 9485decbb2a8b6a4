"""The one rule for device ids: `[a-z0-9][a-z0-9._-]{0,63}`.

A device id becomes a broker user name and a line of mosquitto's password file
(`id:password`, split at the first `:`), a topic level (`bc/<id>/up`), an ACL line and a
URL path segment. Lower case only: later IM names and mailboxes fold case, so `Meter-A` and
`meter-a` must not be two devices. The API, the CLI, the database layer and broker.write
all check it here."""

import re

PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_DEVICE_ID = re.compile(PATTERN)
RULE = ("device id must be 1 to 64 characters: lower-case letters, digits, '.', '_' or '-', "
        "starting with a letter or digit")


def valid_device_id(value):
    # fullmatch: `$` would also match before a trailing newline ("meter-a\n")
    return isinstance(value, str) and _DEVICE_ID.fullmatch(value) is not None


def check_device_id(value):
    """The id, or ValueError with the rule and the refused id."""
    if not valid_device_id(value):
        shown = value[:80] if isinstance(value, str) else value
        raise ValueError("%s, not %r" % (RULE, shown))
    return value
