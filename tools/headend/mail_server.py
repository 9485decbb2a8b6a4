"""A private mail server for the sim, the tests and small sites (docs/email.md): Debian's
dovecot (IMAP with IDLE, POP3, LMTP) and postfix (submission), from a directory this
project writes (`backchannel mail-config`). The distro's own instances (/etc/dovecot,
/etc/postfix, /var/spool/postfix) are never touched or started.

- dovecot: `dovecot -F -c DIR/dovecot.conf`, its base_dir, state and mail under DIR; IMAPS
  and POP3S with direct TLS only (meters cannot switch a connection to TLS midway), users
  in DIR/users (passwd-file, salted SHA-512), LMTP on loopback.
- postfix: `postfix -c DIR/postfix start-fg`, its queue and data under DIR: submission
  with AUTH (dovecot's, over a socket in postfix's queue) over direct TLS (smtps) only, no
  port 25, no relaying, delivering to dovecot over LMTP.

Why not OpenSMTPD: Debian 12's 6.8.0p2 fails every TLS handshake with OpenSSL 3 ("EVP
lib", OpenSMTPD issues #1171 and #1239), and its spool and control socket are compiled in
(/var/spool/smtpd, /var/run/smtpd.sock), so a private instance needs a mount namespace."""

import base64
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

DOVECOT_CONF = "dovecot.conf"
USERS = "users"                 # dovecot passwd-file: address:{SSHA512}...
PACKAGES = "dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix"
MAX_MESSAGE = 10 * 1024 * 1024


class MailServerError(Exception):
    """One line for the user."""


def find(program):
    for path in (shutil.which(program), "/usr/sbin/%s" % program, "/usr/bin/%s" % program):
        if path and os.path.exists(path):
            return path
    raise MailServerError("%s not found (Debian: apt-get install %s)" % (program, PACKAGES))


def missing():
    """A reason the servers cannot run here, or None."""
    for program in ("dovecot", "postfix"):
        try:
            find(program)
        except MailServerError as e:
            return str(e)
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        return "dovecot's LMTP server is missing (apt-get install dovecot-lmtpd)"
    if os.geteuid() != 0:
        return "postfix's master runs as root"
    return None


def _mail_owner():
    """(uid, gid, user) that owns the mailboxes: Debian's `mail` user under root (dovecot
    never gives mail access to uid 0), else whoever runs the servers. Mail processes chroot
    into DIR/mail first, so DIR's parents need not be open to that user."""
    p = pwd.getpwnam("mail") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    return p.pw_uid, p.pw_gid, p.pw_name


def dovecot_text(d, domain, cert, key, imaps_port, pop3s_port, lmtp_port, bind):
    uid, gid, user = _mail_owner()
    return "\n".join([
        "# written by `backchannel mail-config`: a private dovecot for backchannel",
        "instance_name = backchannel-%s" % hashlib.sha256(str(d).encode()).hexdigest()[:8],
        "base_dir = %s" % (d / "run" / "dovecot"),
        "state_dir = %s" % (d / "state"),
        "log_path = %s" % (d / "dovecot.log"),
        "protocols = imap pop3 lmtp",
        "listen = %s" % bind,
        "ssl = required",
        "ssl_cert = <%s" % cert,
        "ssl_key = <%s" % key,
        "ssl_min_protocol = TLSv1.2",
        "disable_plaintext_auth = yes",
        "auth_mechanisms = plain login",
        "mail_location = maildir:~/Maildir",
        "valid_chroot_dirs = %s" % (d / "mail"),
        "mail_uid = %d" % uid, "mail_gid = %d" % gid,
        "first_valid_uid = %d" % uid, "last_valid_uid = %d" % uid,
        "first_valid_gid = %d" % gid, "last_valid_gid = %d" % gid,
        "mail_privileged_group = %s" % user,
        "imap_idle_notify_interval = 1 mins",
        "passdb {", "  driver = passwd-file",
        "  args = scheme=SSHA512 username_format=%%u %s" % (d / USERS), "}",
        "userdb {", "  driver = static",
        "  args = uid=%d gid=%d home=%s/./%%d/%%n" % (uid, gid, d / "mail"), "}",
        "service imap-login {",
        "  inet_listener imap {", "    port = 0", "  }",
        "  inet_listener imaps {", "    port = %d" % imaps_port, "    ssl = yes", "  }", "}",
        "service pop3-login {",
        "  inet_listener pop3 {", "    port = 0", "  }",
        "  inet_listener pop3s {", "    port = %d" % pop3s_port, "    ssl = yes", "  }", "}",
        "service auth {",
        "  user = root     # reads DIR/users, whose parents may be private to root",
        "  unix_listener %s {" % (d / "postfix" / "spool" / "private" / "auth"),
        "    mode = 0660", "    user = postfix", "    group = postfix", "  }", "}",
        "service lmtp {",
        "  inet_listener lmtp {", "    address = 127.0.0.1", "    port = %d" % lmtp_port,
        "  }", "}",
        "protocol lmtp {", "  postmaster_address = postmaster@%s" % domain, "}",
        ""])


MASTER_CF = """\
# written by `backchannel mail-config`: no port 25; submission with direct TLS (smtps) only
%(bind)s:%(smtps)d inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_main(d, domain, cert, key, lmtp_port, bind, max_bytes):
    return "\n".join([
        "# written by `backchannel mail-config`: a private postfix for backchannel",
        "compatibility_level = 3.6",
        "queue_directory = %s" % (d / "postfix" / "spool"),
        "data_directory = %s" % (d / "postfix" / "data"),
        "mail_owner = postfix", "setgid_group = postdrop",
        "myhostname = %s" % domain, "mydomain = %s" % domain, "myorigin = %s" % domain,
        "mydestination =", "relay_domains =", "alias_maps =", "alias_database =",
        "local_transport = error:no local delivery here",
        "inet_interfaces = %s" % bind, "inet_protocols = ipv4",
        "virtual_mailbox_domains = %s" % domain,
        "virtual_transport = lmtp:inet:127.0.0.1:%d" % lmtp_port,
        "smtpd_reject_unlisted_recipient = no",     # dovecot's LMTP knows the mailboxes
        "smtpd_relay_restrictions = permit_sasl_authenticated, reject",
        "smtpd_sasl_type = dovecot",
        "smtpd_sasl_path = private/auth",           # dovecot's socket, in the queue
        "smtpd_tls_chain_files = %s, %s" % (key, cert),
        "smtpd_tls_security_level = encrypt", "smtpd_tls_auth_only = yes",
        "message_size_limit = %d" % max_bytes,
        "maillog_file = %s" % (d / "postfix" / "maillog"),
        "maillog_file_prefixes = %s" % d,
        "smtputf8_enable = no", "biff = no",
        ""])


def write(directory, domain, cert, key, imaps_port=993, pop3s_port=995, smtps_port=465,
          lmtp_port=24, bind="127.0.0.1", max_bytes=MAX_MESSAGE):
    """Write DIR/dovecot.conf and DIR/postfix/{main,master}.cf; returns the ports."""
    d = Path(directory).resolve()
    for path in (cert, key):
        if not Path(path).is_file():
            raise MailServerError("no such file: %s" % path)
    _check_reachable(d)
    for sub in ("run/dovecot", "state", "mail", "postfix/spool", "postfix/data"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    uid, gid, _user = _mail_owner()
    os.chown(d / "mail", uid, gid)
    postfix = pwd.getpwnam("postfix") if _has_user("postfix") else None
    if postfix is not None:         # its master keeps a lock there, as the postfix user
        os.chown(d / "postfix" / "data", postfix.pw_uid, postfix.pw_gid)
    cert, key = Path(cert).resolve(), Path(key).resolve()
    if not (d / USERS).exists():
        os.close(os.open(d / USERS, os.O_WRONLY | os.O_CREAT, 0o600))
    (d / DOVECOT_CONF).write_text(dovecot_text(d, domain, cert, key, imaps_port, pop3s_port,
                                               lmtp_port, bind))
    (d / "postfix" / "main.cf").write_text(postfix_main(d, domain, cert, key, lmtp_port, bind,
                                                        max_bytes))
    (d / "postfix" / "master.cf").write_text(MASTER_CF % {"bind": bind, "smtps": smtps_port})
    return {"domain": domain, "imaps_port": imaps_port, "pop3s_port": pop3s_port,
            "smtps_port": smtps_port, "lmtp_port": lmtp_port, "host": bind}


def _check_reachable(d):
    """postfix's master opens its lock in DIR as the postfix user: every parent must let
    others through (o+x), which a home directory or pytest's tmp_path does not."""
    for parent in reversed(d.parents):
        try:
            mode = parent.stat().st_mode
        except OSError:
            return
        if not mode & 0o001:
            raise MailServerError("the postfix user cannot reach %s: %s is mode %o (choose a "
                                  "directory whose parents allow o+x)"
                                  % (d, parent, mode & 0o777))


def _has_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ssha512(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def add_account(directory, address, password):
    """Create (or reset the password of) a mailbox. dovecot reads the passwd-file on each
    login, and postfix authenticates through dovecot, so no restart is needed."""
    d = Path(directory)
    if not (d / DOVECOT_CONF).exists():
        raise MailServerError("%s has no mail config (run mail-config first)" % d)
    local, _, domain = address.partition("@")
    if (any(c in address for c in ":\n\t \\/") or not local or not domain
            or "@" in domain):
        raise MailServerError("not an address: %r" % address)
    path = d / USERS
    lines = [x for x in path.read_text().splitlines() if x.split(":", 1)[0] != address]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines + ["%s:%s" % (address, ssha512(password))]) + "\n")
    os.replace(tmp, path)


def start(directory, ports, timeout=20.0, new_session=False, host="127.0.0.1"):
    """Start postfix, then dovecot (its auth socket goes into postfix's queue), both in
    the foreground; returns their Popens once every port in `ports` accepts connections
    on host (the address mail-config bound them to).
    new_session: out of the caller's process group, so a terminal's Ctrl-C reaches the
    caller alone, which then stops them with stop() (`make sim`)."""
    d = Path(directory).resolve()
    procs = []
    with open(d / "postfix.out", "ab") as out:
        procs.append(subprocess.Popen(
            [find("postfix"), "-c", str(d / "postfix"), "start-fg"], stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=new_session))
    _wait_for(d, procs, (d / "postfix" / "spool" / "private").is_dir, timeout)
    with open(d / "dovecot.out", "ab") as out:
        procs.append(subprocess.Popen([find("dovecot"), "-F", "-c", str(d / DOVECOT_CONF)],
                                      stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL,
                                      start_new_session=new_session))
    for port in ports:
        _wait_for(d, procs, lambda p=port: _listening(host, p), timeout)
    return procs


def _listening(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait_for(d, procs, ready, timeout):
    deadline = time.monotonic() + timeout
    while not ready():
        for proc in procs:
            if proc.poll() is not None:
                stop(procs)
                raise MailServerError("%s exited with %s: %s" % (
                    Path(proc.args[0]).name, proc.returncode, _logs(d)))
        if time.monotonic() > deadline:
            stop(procs)
            raise MailServerError("the mail server did not start: %s" % _logs(d))
        time.sleep(0.05)


def stop(procs, timeout=10.0):
    """Stop both. postfix's master is not the `postfix start-fg` process itself: it is
    stopped through its pid file."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        if Path(proc.args[0]).name == "postfix":
            _stop_master(Path(proc.args[2]) / "spool" / "pid" / "master.pid", timeout)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _stop_master(pidfile, timeout):
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 15)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)


def _logs(d):
    return " | ".join(_tail(d / name) for name in ("postfix.out", "postfix/maillog",
                                                   "dovecot.out", "dovecot.log"))


def _tail(path, n=3):
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])
