"""Outbound allow-lists for a netlab site: beside its stateful firewall (inbound: replies
only), the site may open connections only to the given TCP ports of one host, as a site
whose firewall lets nothing but mail (SMTPS, IMAPS) or XMPP out. Anything else the site
sends is dropped at its output hook and counted; the sender sees EPERM at once.

    egress.restrict(lab, "a", lab.headend_ip, [465, 993])
    egress.dropped(lab, "a")      # packets refused so far
"""

TABLE = "bc_egress"
RULES = """\
table inet {table} {{
    chain output {{
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        ct state established,related accept
        ip daddr {host} tcp dport {{ {ports} }} accept
        counter drop
    }}
}}
"""


def restrict(lab, site, host, ports):
    """Replace the site's allow-list with host:ports (TCP). Idempotent."""
    if not ports:
        raise ValueError("an allow-list needs at least one port")
    script = "add table inet %s\ndelete table inet %s\n" % (TABLE, TABLE)
    script += RULES.format(table=TABLE, host=host,
                           ports=", ".join(str(int(p)) for p in sorted(set(ports))))
    lab.check_output(site, ["nft", "-f", "-"], input=script)


def lift(lab, site):
    """Remove the allow-list (the site may connect anywhere again)."""
    lab.check_output(site, ["nft", "-f", "-"],
                     input="add table inet %s\ndelete table inet %s\n" % (TABLE, TABLE))


def dropped(lab, site):
    """Packets the allow-list dropped so far."""
    for line in lab.check_output(site, ["nft", "list", "table", "inet", TABLE]).splitlines():
        if "counter" in line and "drop" in line:
            return int(line.split("packets")[1].split()[0])
    raise AssertionError("no allow-list counter in %s" % site)
