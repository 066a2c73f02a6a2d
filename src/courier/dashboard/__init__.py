"""Dashboard: the bucket grid page and its JSON API (DESIGN §10)."""

from courier.dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]
