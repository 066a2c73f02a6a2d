"""``courier dashboard``: the bucket-grid web page."""

from __future__ import annotations

import click

from courier.cli.audit import SettingsSource


@click.command()
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8090).")
@click.pass_obj
def dashboard(c: SettingsSource, host: str | None, port: int | None) -> None:
    """Serve the bucket grid (types x buckets, on time / late / open / closable) and its API."""
    from courier.dashboard import serve

    serve(c.settings(dashboard={"host": host, "port": port}))
