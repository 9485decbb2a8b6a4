"""`backchannel release keygen|sign|publish` (docs/ota.md): the release key, signed
releases, and publishing a verified release into the head-end's releases directory."""

import os

import click

from . import release_keys, releases
from .client import CliError
from .release_keys import ReleaseError


def _call(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ReleaseError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError("%s: %s" % (getattr(e, "filename", None) or "I/O error",
                                   e.strerror or e)) from None


@click.group("release")
def release():
    """Signed firmware releases: keys, signing, publishing (docs/ota.md)."""


@release.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory for release-key.pem (private) and release-key.pub")
def keygen(out_dir):
    """Create the release key pair (ECDSA P-256). Keep release-key.pem offline."""
    priv, pub = _call(release_keys.keygen, out_dir)
    click.echo("private key: %s (mode 0600, keep it offline)" % priv)
    click.echo("public key:  %s" % os.path.join(out_dir, release_keys.PUBLIC_NAME))
    click.echo("update_key:  %s" % pub)


@release.command("sign")
@click.option("--key", "key_path", required=True, help="release-key.pem")
@click.option("--version", "version", required=True, help="MAJOR.MINOR.PATCH")
@click.option("--image", type=click.Path(dir_okay=False),
              help="a whole-image release (ESP32 OTA) of this file instead of SRC_DIR")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="releases directory: the release goes to OUT/VERSION")
@click.argument("src_dir", required=False, type=click.Path(file_okay=False))
def sign(key_path, version, image, out_dir, src_dir):
    """Sign the files of SRC_DIR (or --image) as release VERSION into OUT/VERSION."""
    if (src_dir is None) == (image is None):
        raise CliError("give either SRC_DIR or --image")
    dest, text = _call(releases.sign, key_path, version, out_dir, src_dir=src_dir, image=image)
    files = releases.files_of(releases.parse_manifest(text))
    click.echo("signed %s: %d file(s), %d bytes -> %s" % (
        version, len(files), sum(n for n, _ in files.values()), dest))


@release.command("publish")
@click.argument("release_dir", type=click.Path(file_okay=False))
@click.option("--pub", "pub_path", required=True, help="release-key.pub")
@click.option("--releases", "releases_dir", envvar="BACKCHANNEL_RELEASES",
              help="the head-end's releases directory (default: `releases` next to --db) "
                   "[env BACKCHANNEL_RELEASES]")
@click.option("--db", "db_path", envvar="BACKCHANNEL_DB", default="backchannel.db",
              show_default=True, help="the head-end's database [env BACKCHANNEL_DB]")
def publish(release_dir, pub_path, releases_dir, db_path):
    """Check RELEASE_DIR's signature and every file, then copy it where the head-end
    serves it."""
    key = _call(release_keys.load_public, pub_path)
    if releases_dir is None:
        releases_dir = os.path.join(os.path.dirname(os.path.abspath(db_path)), "releases")
    dest, new = _call(releases.publish, release_dir, key, releases_dir)
    version = os.path.basename(dest)
    click.echo(("published %s -> %s" if new else "%s already published in %s")
               % (version, dest))
