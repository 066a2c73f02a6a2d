"""Parsing of command-line values shared by several commands."""

from __future__ import annotations

import click

from courier.model import parse_time


def parse_when(text: str | None, default: float) -> float:
    """A ``--from``/``--to``/``--since`` value (RFC 3339 or epoch seconds); ``default`` if unset."""
    if text is None:
        return default
    try:
        return parse_time(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a time (RFC 3339 or epoch seconds)") from exc
