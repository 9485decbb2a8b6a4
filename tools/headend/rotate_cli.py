"""`backchannel rotate-key METER`: the guarded key rotation (key_rotation.py), through the
API with a utility token."""

import click

from . import ids


def command(api):
    @click.command("rotate-key")
    @api
    @click.argument("meter")
    @click.option("--expires-in", type=click.IntRange(10, 86400), default=3600,
                  show_default=True, help="seconds the meter has to answer")
    def rotate_key(client, meter, expires_in):
        """Give METER a new key agreed by ECDH (a utility token). The old key keeps working
        until the meter exchanges under the new one, then stops; `backchannel work ID` shows
        the rotation's outcome."""
        try:
            ids.check_device_id(meter)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="METER") from None
        w = client.call("POST", "/v1/devices/%s/rotate-key" % meter,
                        params={"expires_in": expires_in})
        click.echo("key rotation for %s queued as %s (expires in %d s)"
                   % (meter, w["id"], expires_in))

    return rotate_key
