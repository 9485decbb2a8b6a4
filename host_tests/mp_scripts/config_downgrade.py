# The https -> http refusal of firmware/config.py under MicroPython: one JSON line per case,
# "ok" or the ConfigError's text (host_tests/test_attacks_downgrade.py).
import json

import config

BASE = config.validate({"server_url": "https://headend.example:8443", "device_id": "m"})
for changes in ({"server_url": "http://headend.example:8443"},
                {"server_url": "http://attacker.example"},
                {"server_url": ""},
                {"server_url": "https://other.example"}):
    try:
        config.validate(changes, BASE)
        print(json.dumps("ok"))
    except config.ConfigError as exc:
        print(json.dumps(str(exc)))
