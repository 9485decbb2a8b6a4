# firmware/p256.py under MicroPython and CPython, for host_tests/test_p256.py.
#   p256_cases.py   reads one JSON document from stdin:
#     {"verify": [[name, key_hex, message_hex, signature_hex], ...], "keys": [text, ...]}
#   and prints one JSON document:
#     {"verify": {name: bool}, "keys": [["ok", key_hex] or [ErrorClass, message]],
#      "odd_types": [result of verify(...) for arguments of the wrong type]}
# Each verify result is True, False or "raised <Class>: <message>" (which the tests reject).

import json
import sys
from binascii import hexlify, unhexlify

import p256


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the tests report what was raised
        return "raised %s: %s" % (type(e).__name__, e)


def key_outcome(text):
    try:
        return ["ok", hexlify(p256.public_key_from_hex(text)).decode()]
    except ValueError as e:
        return ["ValueError", str(e)]
    except Exception as e:  # noqa: BLE001
        return [type(e).__name__, str(e)]


def main():
    doc = json.loads(sys.stdin.read())
    out = {"verify": {}, "keys": [], "odd_types": []}
    for name, key, message, signature in doc["verify"]:
        out["verify"][name] = outcome(p256.verify, unhexlify(key), unhexlify(message),
                                      unhexlify(signature))
    for text in doc["keys"]:
        out["keys"].append(key_outcome(text))
    key, message, signature = [unhexlify(x) for x in doc["verify"][0][1:]]
    for args in ((None, message, signature), (key, message, None), (key, None, signature),
                 (key.hex() if hasattr(key, "hex") else "x", message, signature),
                 (12, message, signature), (key, message, 12),
                 (bytearray(key), memoryview(message), memoryview(signature))):
        out["odd_types"].append(outcome(p256.verify, *args))
    print(json.dumps(out))


main()
