"""The key API: one module per route family (``keys``, ``auth``, ``github``, ``operations``,
``slack``), each declaring its routes once (``routes.Route``); ``table`` lists them, ``app``
dispatches them, ``openapi`` describes them."""

from __future__ import annotations

from .app import KeyApiApp

__all__ = ["KeyApiApp"]
