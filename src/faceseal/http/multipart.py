"""Reading ``multipart/form-data`` photo uploads into memory, never onto disk.

Starlette's form parser spools files larger than 1 MiB to temporary files; a face photo is
biometric data and must not land unencrypted in ``/tmp``. This reader keeps every part in memory
(bounded by the service's body limit, enforced while streaming before the parser sees the bytes),
accepts only the fields an operation names, and refuses anything else with a clear 4xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from faceseal.errors import InvalidInput, MalformedRequest, UnsupportedMediaType

MAX_FIELD_BYTES = 1024
MAX_PARTS = 64
MAX_HEADERS_PER_PART = 8


@dataclass
class Form:
    """The parts of one upload: photo bytes by field name, and short text fields."""

    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str | None = None
    ended: bool = False
    data: bytearray = field(default_factory=bytearray)
    disposition: bytes = b""


async def read_form(
    content_type: str | None,
    stream: AsyncIterator[bytes],
    *,
    file_fields: dict[str, int],
    text_fields: frozenset[str],
) -> Form:
    """Parse an upload whose file fields (name -> how many files at most) and text fields are
    known; anything else is refused."""
    media, params = parse_options_header(content_type or "")
    if media != b"multipart/form-data":
        raise UnsupportedMediaType("this operation takes multipart/form-data (a photo upload)")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MalformedRequest("the multipart body has no usable boundary")
    reader = _Reader(file_fields, text_fields)
    parser = MultipartParser(boundary, reader.callbacks(), max_header_count=MAX_HEADERS_PER_PART)
    try:
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise MalformedRequest("the multipart body ends before its closing boundary")
    except FormParserError:
        raise MalformedRequest("the multipart body cannot be parsed") from None
    return reader.form()


class _Reader:
    """The parser's callbacks: collect parts, refusing unknown or oversized fields at once."""

    def __init__(self, file_fields: dict[str, int], text_fields: frozenset[str]) -> None:
        self.file_fields = file_fields
        self.text_fields = text_fields
        self.parts: list[_Part] = []
        self.header_name = bytearray()
        self.header_value = bytearray()

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise MalformedRequest(f"more than {MAX_PARTS} parts in the upload")
        self.parts.append(_Part())

    def on_part_end(self) -> None:
        self.parts[-1].ended = True

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])

    def on_header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.parts[-1].disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        part = self.parts[-1]
        kind, options = parse_options_header(part.disposition)
        name = options.get(b"name")
        if kind != b"form-data" or name is None:
            raise MalformedRequest("every part needs Content-Disposition: form-data; name=...")
        part.name = name.decode("utf-8", "replace")
        if part.name in self.file_fields:
            count = sum(1 for p in self.parts if p.name == part.name)
            if count > self.file_fields[part.name]:
                raise InvalidInput(f"at most {self.file_fields[part.name]} file(s) in field "
                                   f"{part.name!r}")
        elif part.name in self.text_fields:
            if any(p.name == part.name for p in self.parts[:-1]):
                raise InvalidInput(f"field {part.name!r} is given more than once")
        else:
            raise InvalidInput(f"unexpected field {part.name[:64]!r} in the upload")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.data.extend(data[start:end])
        if part.name in self.text_fields and len(part.data) > MAX_FIELD_BYTES:
            raise InvalidInput(f"field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def form(self) -> Form:
        if not self.parts:
            raise MalformedRequest("the multipart body has no parts")
        form = Form()
        for part in self.parts:
            if part.name is None or not part.ended:
                raise MalformedRequest("the multipart body ends inside a part")
            if part.name in self.file_fields:
                form.files.setdefault(part.name, []).append(bytes(part.data))
            else:
                try:
                    form.fields[part.name] = part.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(f"field {part.name!r} is not UTF-8 text") from None
            part.data.clear()
        return form
