"""The HTTP service: a FastAPI application over one open vault, served by uvicorn.

``create_app(vault, settings)`` builds the application; ``faceseal serve`` (see
:mod:`faceseal.http.server`) opens the vault once, unbound, and serves it. Each request binds its
own view of the vault with its API key, so every operation is authorised and audited by the
vault's one choke point. Needs the ``server`` extra (``pip install 'faceseal[server]'``).
"""

from faceseal.http.app import create_app
from faceseal.http.settings import Settings

__all__ = ["Settings", "create_app"]
