"""The base of every result type: one dataclass per JSON shape (issue #16).

A result type is the one definition of what an operation returns: the Python API returns it,
the CLI prints :meth:`Result.to_dict`, the HTTP service serves it as its response model (pydantic
reads these dataclasses: field types, and the docstring under a field as its description), and
the HTTP client rebuilds it with :meth:`Result.from_dict`. This module imports nothing of
faceseal, so every layer's results (audit, access, vault) can share it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Self


def _inherited_docs(schema: dict[str, Any], cls: type) -> None:
    """Describe the fields a result inherits too (pydantic reads docstrings of the class's own
    fields only): from the docstring under the field where a base class declares it."""
    properties = schema.get("properties", {})
    for base in cls.__mro__[1:]:
        for name, doc in _field_docstrings(base).items():
            if name in properties and "description" not in properties[name]:
                properties[name]["description"] = doc


@functools.cache
def _field_docstrings(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of ``cls``'s own body."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    return {node.target.id: inspect.cleandoc(after.value.value)
            for node, after in itertools.pairwise(body)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)}


#: How pydantic reads a result as a response model: unknown fields refused, the docstring under a
#: field is its description, and every field is required in what is served (the service always
#: sends them all). A plain dict (pydantic's ConfigDict is a TypedDict), so faceseal itself
#: needs no pydantic.
SCHEMA_CONFIG: dict[str, Any] = {"extra": "forbid", "use_attribute_docstrings": True,
                                 "json_schema_serialization_defaults_required": True,
                                 "json_schema_extra": _inherited_docs}


@dataclass(frozen=True)
class Result:
    """Base of every typed result: a frozen dataclass that turns into a JSON-ready dict and
    back."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SCHEMA_CONFIG

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The result from its JSON form (:meth:`to_dict`, what the service serves), nested
        results rebuilt from their field types. Fields this version does not know are ignored
        (a newer service may send more)."""
        return typing.cast(Self, _build(cls, data))


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], data[f.name])
                  for f in dataclasses.fields(cls) if f.name in data})


def _value(hint: Any, value: Any) -> Any:
    """``value`` (JSON) as the field type ``hint`` wants it: nested results rebuilt."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_value(item, v) for v in value]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value)
    return value
