"""A private CA for backchannel: the meters pin it, the head-end serves a cert it signed.

    .venv/bin/python -m lab.pki init DIR [--host NAME ...] [--ip ADDR ...] [--force]
    .venv/bin/python -m lab.pki server DIR [--host NAME ...] [--ip ADDR ...]

`init` creates, in DIR:

    ca.pem, ca.der   the CA certificate (PEM for the head-end CLI's --cacert, DER for the
                     meter's ca_file: the firmware pins it with no base64 step; PEM works too)
    ca.key           the CA's private key (mode 0600; keep it off the head-end if you can)
    server.pem       the head-end's certificate, signed by the CA (`serve --certfile`)
    server.key       its private key (mode 0600, `serve --keyfile`)

Keys are ECDSA P-256, signatures ECDSA-SHA256; the CA is valid 10 years, a server cert
2 years (both back-dated one hour against clock skew). With neither --host nor --ip the
server cert names `localhost` and `127.0.0.1`. `init` is idempotent: an existing CA is
kept, and so is its server cert unless --host/--ip are given (then a new one is issued
for those names). --force makes a new CA and server cert; the meters must then be given
the new ca.der. `server` issues a new server cert from the existing CA (for new names or
addresses, or before the old one expires); meters need no change.

What the meter checks (MicroPython `tls`, Mbed TLS 3.6.6 on the unix port; firmware/httpc.py
uses SSLContext(PROTOCOL_TLS_CLIENT), verify_mode CERT_REQUIRED,
load_verify_locations(DER bytes) -- positional: `tls` takes no keywords and wants DER, so
httpc converts a PEM ca_file itself -- and asyncio.open_connection(host, port, ssl=ctx,
server_hostname=host)), each tried against this module's certs:

- the chain must end at the pinned CA ("The certificate is not correctly signed by the
  trusted CA"), and be within its validity dates ("The certificate validity has expired",
  "... starts in the future"): the meter's clock must be about right before its first
  exchange (the unix port has the host's clock; a board needs its RTC set);
- the host of server_url must be in the server cert. A DNS name matches a dNSName SAN;
  an IP literal matches an iPAddress SAN (Mbed TLS 3.6 compares addresses), so
  https://127.0.0.1:PORT works with `--ip 127.0.0.1` and needs no workaround (no
  IP-as-DNS-name entry). A name or address not in the SAN fails with "The certificate
  Common Name (CN) does not match with the expected CN" (Mbed TLS's wording for any name
  mismatch, SAN included).
- Mbed TLS is laxer than CPython in a way this module never relies on: it also accepts an
  IP literal written as a dNSName SAN, or as the CN of a cert without SAN; CPython's ssl
  accepts an IP only from an iPAddress SAN. So: always a SAN, IPs as iPAddress entries.
- Mbed TLS sends an IP literal as SNI (RFC 6066 says not to; CPython sends none); the
  head-end (uvicorn/OpenSSL) ignores it.
- The handshake runs lazily on the first write (asyncio's open_connection returns
  before it), so verification errors surface from write/drain as ValueError (other TLS
  failures as OSError with a negative Mbed TLS code); httpc turns both into TlsError and
  writes one line to stderr, e.g. "httpc: TLS with 127.0.0.1:8443 failed: certificate
  verification failed: The certificate is not correctly signed by the trusted CA".

CPython (the head-end's clients, firmware tests under CPython) checks the same with
ssl.SSLContext(PROTOCOL_TLS_CLIENT) and only the pinned CA loaded (DER or PEM).

Functions for tests and scripts: make_ca(dir), issue_server(dir, hosts, ips), paths(dir).
"""

import datetime
import ipaddress
import os
import sys
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 730
SKEW = datetime.timedelta(hours=1)
DEFAULT_HOSTS = ("localhost",)
DEFAULT_IPS = ("127.0.0.1",)
NAMES = {"ca_pem": "ca.pem", "ca_der": "ca.der", "ca_key": "ca.key",
         "server_pem": "server.pem", "server_key": "server.key"}


class PkiError(Exception):
    """A problem worth one line to the user (bad name, missing or unreadable files)."""


def paths(directory):
    """{"ca_pem", "ca_der", "ca_key", "server_pem", "server_key"}: Paths inside directory."""
    d = Path(directory)
    return {k: d / v for k, v in NAMES.items()}


def _write(path, data, private=False):
    """Write-then-rename, so a crash never leaves half a key; keys are 0600 from the start."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.replace(tmp, path)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now():
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _mkdir(directory):
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PkiError("cannot create %s: %s" % (directory, e.strerror or e)) from None


def make_ca(directory, force=False, name="backchannel CA", days=CA_DAYS):
    """Create the CA in directory (ca.pem, ca.der, ca.key). Returns True if it made one,
    False if a CA was already there (kept unless force)."""
    p = paths(directory)
    if not force and (p["ca_pem"].exists() or p["ca_key"].exists()):
        cert, _ = load_ca(directory)  # an existing CA must be usable, not half there
        if not p["ca_der"].exists():
            _write(p["ca_der"], cert.public_bytes(serialization.Encoding.DER))
        return False
    _mkdir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write(p["ca_key"], _key_pem(key), private=True)
    _write(p["ca_pem"], cert.public_bytes(serialization.Encoding.PEM))
    _write(p["ca_der"], cert.public_bytes(serialization.Encoding.DER))
    return True


def load_ca(directory):
    """(certificate, private key) of the CA in directory, or PkiError saying what is wrong."""
    p = paths(directory)
    have = [k for k in ("ca_pem", "ca_key") if p[k].exists()]
    if not have:
        raise PkiError("no CA in %s (run `pki.py init %s`)" % (directory, directory))
    if len(have) == 1:
        missing = p["ca_key" if have == ["ca_pem"] else "ca_pem"].name
        raise PkiError("incomplete CA in %s: %s is missing (restore it, or make a new CA "
                       "with `pki.py init %s --force`)" % (directory, missing, directory))
    try:
        cert_pem, key_pem = p["ca_pem"].read_bytes(), p["ca_key"].read_bytes()
    except OSError as e:
        raise PkiError("cannot read the CA in %s: %s" % (directory, e.strerror or e)) from None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise PkiError("%s is not a PEM certificate" % p["ca_pem"]) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError("%s is not an unencrypted PEM private key" % p["ca_key"]) from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise PkiError("%s and %s do not belong together" % (p["ca_pem"], p["ca_key"]))
    return cert, key


def _check_host(name):
    # A DNS name as a meter would write it in server_url: LDH labels, optional wildcard.
    labels = name.rstrip(".").split(".")
    ok = bool(name) and len(name) <= 253 and all(
        0 < len(lb) <= 63 and (lb == "*" and i == 0 or
                               all(c.isalnum() and c.isascii() or c == "-" for c in lb)
                               and not lb.startswith("-") and not lb.endswith("-"))
        for i, lb in enumerate(labels))
    if not ok:
        raise PkiError("not a valid host name: %r" % (name,))
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name.rstrip(".").lower()
    raise PkiError("%s is an IP address: give it with --ip" % name)


def _check_ip(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PkiError("not a valid IP address: %r" % (text,)) from None


def issue_server(directory, hosts=DEFAULT_HOSTS, ips=DEFAULT_IPS, days=SERVER_DAYS):
    """Issue server.pem + server.key in directory, signed by its CA, with a SAN of the DNS
    names in hosts and the addresses in ips. Returns the certificate."""
    hosts = [_check_host(h) for h in hosts]
    addrs = [_check_ip(a) for a in ips]
    if not hosts and not addrs:
        raise PkiError("a server cert needs at least one --host or --ip")
    ca_cert, ca_key = load_ca(directory)
    p = paths(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(h) for h in dict.fromkeys(hosts)]
    san += [x509.IPAddress(a) for a in dict.fromkeys(addrs)]
    cn = hosts[0] if hosts else str(addrs[0])
    now = _now()
    end = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(p["server_key"], _key_pem(key), private=True)
    _write(p["server_pem"], cert.public_bytes(serialization.Encoding.PEM))
    return cert


def init(directory, hosts=(), ips=(), force=False):
    """make_ca + issue_server: a server cert is issued when the CA is new, when none exists
    yet, or when names are given. Returns (made_ca, issued_server)."""
    made = make_ca(directory, force=force)
    p = paths(directory)
    if made or not p["server_pem"].exists() or not p["server_key"].exists() or hosts or ips:
        if not hosts and not ips:
            hosts, ips = DEFAULT_HOSTS, DEFAULT_IPS
        issue_server(directory, hosts, ips)
        return made, True
    return made, False


def _describe(cert):
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(v.value) for v in san]
    return "%s (valid until %s)" % (", ".join(names), cert.not_valid_after_utc.date())


# --- CLI ---

def _names(fn):
    fn = click.option("--ip", "ips", multiple=True, metavar="ADDR",
                      help="IP address for the server cert (repeatable)")(fn)
    return click.option("--host", "hosts", multiple=True, metavar="NAME",
                        help="DNS name for the server cert (repeatable)")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """A private CA for backchannel: the meters pin DIR/ca.der, the head-end serves
    DIR/server.pem + DIR/server.key."""


@cli.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@_names
@click.option("--force", is_flag=True, help="replace an existing CA (meters must get the new one)")
def init_cmd(directory, hosts, ips, force):
    """Create the CA and a server cert in DIRECTORY (default names: localhost, 127.0.0.1)."""
    made, issued = init(directory, hosts, ips, force)
    p = paths(directory)
    click.echo("%s CA %s" % ("created" if made else "kept existing", p["ca_pem"]))
    if issued:
        click.echo("issued server cert %s for %s" % (
            p["server_pem"], _describe(x509.load_pem_x509_certificate(
                p["server_pem"].read_bytes()))))
    else:
        click.echo("kept existing server cert %s" % p["server_pem"])
    click.echo("meters pin %s; serve with --certfile %s --keyfile %s"
               % (p["ca_der"], p["server_pem"], p["server_key"]))


@cli.command("server")
@click.argument("directory", type=click.Path(file_okay=False))
@_names
def server_cmd(directory, hosts, ips):
    """Issue a new server cert from the CA in DIRECTORY (default names: localhost,
    127.0.0.1)."""
    if not hosts and not ips:
        hosts, ips = DEFAULT_HOSTS, DEFAULT_IPS
    cert = issue_server(directory, hosts, ips)
    click.echo("issued server cert %s for %s" % (paths(directory)["server_pem"],
                                                 _describe(cert)))


def main(argv=None):
    """Entry point: every error is one line on stderr, never a traceback."""
    try:
        rc = cli.main(args=argv, prog_name="pki.py", standalone_mode=False)
    except PkiError as e:
        click.echo("pki.py: error: %s" % e, err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo("pki.py: error: %s" % e.format_message(), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("pki.py: error: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as e:
        click.echo("pki.py: error: %s%s" % (e.strerror or e,
                                            ": %s" % e.filename if e.filename else ""), err=True)
        sys.exit(1)
    except Exception as e:  # never a traceback
        click.echo("pki.py: error: %s: %s" % (type(e).__name__, e), err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
