"""The admin and auditor console in the browser (``/ui``): server-rendered pages over the same
vault calls, roles, tenants and audit as the JSON API. See docs/console.md."""

from faceseal.http.console.settings import ConsoleSettings

__all__ = ["ConsoleSettings"]
