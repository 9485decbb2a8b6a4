"""`backchannel backup` and `backchannel restore` (headend/backup.py)."""

import click

from .client import CliError


def _db(fn):
    return click.option("--db", "db_path", envvar="BACKCHANNEL_DB", default="backchannel.db",
                        show_default=True, help="SQLite file or postgresql:// URL "
                        "[env BACKCHANNEL_DB]")(fn)


@click.command("backup")
@_db
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="the backup file to write")
def backup(db_path, out):
    """Back up the store online (head-ends may keep running): SQLite's backup API and the
    device-key file beside it, or pg_dump."""
    from . import backup as backup_mod
    try:
        for path in backup_mod.backup(db_path, out):
            click.echo(path)
    except (backup_mod.BackupError, OSError) as e:
        raise CliError(str(e)) from None


@click.command("restore")
@_db
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False),
              help="a file written by `backchannel backup`")
def restore(db_path, source):
    """Restore a backup into --db: a new SQLite file, or a PostgreSQL database no head-end
    is using."""
    from . import backup as backup_mod
    try:
        for path in backup_mod.restore(source, db_path):
            click.echo(path)
    except (backup_mod.BackupError, OSError) as e:
        raise CliError(str(e)) from None
