"""What the commands that talk to the gateway over HTTP share: options, base URL, calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx

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


class GatewayClient:
    """Calls to one gateway with one key; a connection failure is a ClickException."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_secs: float = 60.0) -> None:
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_secs)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        content: bytes | None = None,
        **params: Any,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return self._client.request(
                method, path, json=json, content=content, headers=headers, params=params or None
            )
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"cannot reach the gateway at {self.base_url}: {exc}; nothing was changed "
                "by this call (or, after a timeout, maybe it was: running it again is safe)"
            ) from exc


def error_text(response: httpx.Response) -> str:
    """The gateway's ``error`` message of a refused call, else the raw body."""
    try:
        doc = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return response.text[:500]
