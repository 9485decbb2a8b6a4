"""A transform hook for the rendezvous tests (loaded as "headend_hooks:tag")."""

CALLS = []


def tag(message, sender, target):
    CALLS.append((sender, target))
    out = dict(message)
    out["routed"] = "%s->%s" % (target, sender)
    body = (message.get("result") or {}).get("body")
    if isinstance(body, dict) and "secret" in body:
        out["result"] = dict(message["result"], body={k: v for k, v in body.items()
                                                      if k != "secret"})
    return out


def broken(message, sender, target):
    raise RuntimeError("boom")
