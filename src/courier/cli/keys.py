"""``courier keys new``: make an API key, print it once with the settings line that holds its hash."""

from __future__ import annotations

import json
import re

import click

from courier.model import is_valid_type_name
from courier.service.auth import hash_key, new_key


@click.group()
def keys() -> None:
    """API keys of the gateway (stored hashed in the [auth] settings)."""


@keys.command("new")
@click.option("--name", required=True, help="Name of the key (shown in errors and metrics).")
@click.option("--types", default="*", show_default=True, help="Event types it may send: A,B or *.")
@click.option("--admin", is_flag=True, help="Make the admin key (schema changes, dashboard).")
def keys_new(name: str, types: str, admin: bool) -> None:
    """Print a new random key once, and the TOML to put in [auth]; only the hash is kept."""
    allowed = [t.strip() for t in types.split(",") if t.strip()]
    bad = [t for t in allowed if t != "*" and not is_valid_type_name(t)]
    if bad or not allowed:
        raise click.BadParameter(
            f"not event type names: {', '.join(bad) or '(none)'}", param_hint="--types"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise click.BadParameter("use 1-64 letters, digits, '_', '.' or '-'", param_hint="--name")
    key = new_key()
    digest = hash_key(key)
    click.echo(f"key (shown once, give it to the client): {key}")
    if admin:
        click.echo("settings ([auth] section of the TOML file):")
        click.echo(f'admin_key_sha256 = "{digest}"')
        return
    entry = f'{{name = {json.dumps(name)}, sha256 = "{digest}", types = {json.dumps(allowed)}}}'
    click.echo("settings (add to `keys = [...]` in the [auth] section of the TOML file):")
    click.echo(entry)
