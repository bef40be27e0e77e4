"""JSON bodies parsed as JSON: Python's parser also takes ``NaN``, ``Infinity`` and
``-Infinity``, which JSON does not have. Routes built with :class:`StrictJSONRoute` refuse them as
malformed JSON (400) before any model sees a non-finite number. Numbers that overflow to infinity
(``1e999``) are valid JSON syntax and are refused by the models instead (422)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

_NOT_JSON = "NaN and Infinity are not JSON"


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body

            def refuse(token: str) -> Any:
                raise json.JSONDecodeError(_NOT_JSON, text, text.find(token))

            self._json = json.loads(text, parse_constant=refuse)
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
