"""The HTTP service: a FastAPI application over one open vault, served by uvicorn.

``create_app(vault, settings)`` builds the application; ``faceseal serve`` (see
:mod:`faceseal.http.server`) opens the vault once, unbound, and serves it. Each request binds its
own view of the vault with its API key, so every operation is authorised and audited by the
vault's one choke point. Needs the ``server`` extra (``pip install 'faceseal[server]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faceseal.http.settings import Settings

if TYPE_CHECKING:
    from faceseal.http.app import create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    # create_app pulls in FastAPI; importing faceseal.http.settings (the CLI does, to build
    # `serve`'s options) must not need the server extra.
    if name == "create_app":
        from faceseal.http.app import create_app  # noqa: PLC0415

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
