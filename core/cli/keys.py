"""`outlast keys rotate ENV`: a new secret key for an environment, printed once."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.text import Text

from .._client import Client
from ..wire import parse_duration
from ..wire.keys import KeyRotation, KeyRotationRequest
from .output import ApiUrl, ClientFactory, Json, SecretKey, client_errors, fail, time_text

__all__ = ["register"]

_ROTATION = TypeAdapter(KeyRotation)


def register(app: typer.Typer, *, client_factory: ClientFactory = Client) -> None:
    """Add the `keys` group to `app`."""
    group = typer.Typer(help="Environments' secret keys.", no_args_is_help=True)
    app.add_typer(group, name="keys")

    @group.command("rotate")
    def rotate(
        env: Annotated[str, typer.Argument(metavar="ENV", help="Environment whose key to replace: dev, prod.",
                                           show_default=False)],
        grace: Annotated[str, typer.Option(help="How long the current key keeps working: 24h, 15m, 0 (now).")]
        = "24h",
        api_url: ApiUrl = None, secret_key: SecretKey = None, json: Json = False,
    ) -> None:
        """Replace ENV's secret key (authenticate with its current key). The new key is printed once:
        only its hash is stored. The current key keeps working for --grace, then is refused."""
        try:
            seconds = parse_duration(grace)
        except ValueError as exc:
            raise fail(f"--grace: {exc}", 2) from None
        with client_errors():
            client = client_factory(api_url=api_url, secret_key=secret_key)
            call = client.requests.call("POST", f"/environments/{quote(env, safe='')}/keys/rotate", _ROTATION,
                                        body=KeyRotationRequest(grace=seconds))
            rotation = client.execute(call)
        if json:
            typer.echo(rotation.model_dump_json(indent=2))
            return
        typer.echo(f"OUTLAST_SECRET_KEY={rotation.secret_key}")  # alone on stdout: `| cut -d= -f2-` works
        Console(stderr=True, highlight=False).print(Text(
            f"new secret key for {rotation.env} (shown once: only its hash is stored). The previous key works "
            f"until {time_text(rotation.previous_key_expires_at)}; then it is refused.", style="bold"), soft_wrap=True)
