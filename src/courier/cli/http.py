"""What the commands that talk to the gateway over HTTP share: options and base URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from courier.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def gateway_options(*, api_key_help: str) -> Callable[[F], F]:
    """``--gateway-url`` and ``--api-key`` (also ``COURIER_API_KEY``)."""

    def decorate(f: F) -> F:
        f = click.option("--api-key", envvar="COURIER_API_KEY", help=api_key_help)(f)
        f = click.option(
            "--gateway-url", help="Gateway base URL (default from settings: gateway host/port)."
        )(f)
        return f

    return decorate


def gateway_base_url(settings: Settings, gateway_url: str | None) -> str:
    return (gateway_url or f"http://{settings.gateway.host}:{settings.gateway.port}").rstrip("/")
