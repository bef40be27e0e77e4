"""Parsing key URIs, and reading the credentials they point at (never contain).

A key URI names where the KEK lives; it is stored in ``vault.json`` and shown by ``keys status``,
so it must never carry a secret. Credentials (a PKCS#11 PIN, a transit token) are named by a
*source* instead::

    env:NAME        the environment variable NAME
    file:/path      a file readable by its owner only (0600), trailing newline ignored

Parameters that would carry a secret inline (``pin-value``, ``token``) are refused.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import InvalidInput, KeyringError
from faceseal.keys.files import check_private

#: Query parameters that would put a credential into the URI.
FORBIDDEN_PARAMETERS = frozenset({"pin-value", "pin", "token", "secret", "password",
                                  "aws_secret_access_key", "secret-access-key"})


def split_query(rest: str, allowed: set[str]) -> tuple[str, dict[str, str]]:
    """``'path?a=1&b=2'`` -> (``'path'``, ``{'a': '1', 'b': '2'}``), refusing unknown names."""
    path, _, query = rest.partition("?")
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name in FORBIDDEN_PARAMETERS:
            raise InvalidInput(
                f"a key URI must not contain a credential ({name}=...); name a source instead, "
                "e.g. pin-source=env:NAME or token-source=file:/path"
            )
        if name not in allowed:
            raise InvalidInput(f"unknown key URI parameter {name!r} (allowed: "
                               f"{', '.join(sorted(allowed))})")
        if name in params:
            raise InvalidInput(f"key URI parameter {name!r} given twice")
        params[name] = value
    return unquote(path), params


#: The key URI parameter that accepts plain HTTP to a key server off this machine, on purpose.
INSECURE_HTTP = "insecure-http"


def plain_http_allowed(url: str, params: dict[str, str], what: str) -> bool:
    """Refuse a key server reached over plain ``http://`` unless it is on this machine
    (a loopback address or ``localhost``) or the URI says ``insecure-http=yes``: data keys
    travel to and from it, in clear on the network otherwise. Returns the parameter's value."""
    raw = params.get(INSECURE_HTTP, "no").strip().lower()
    if raw not in ("yes", "no", "1", "0", "true", "false"):
        raise InvalidInput(f"key URI parameter {INSECURE_HTTP} is yes or no")
    insecure = raw in ("yes", "1", "true")
    parts = urlsplit(url)
    if parts.scheme != "http" or insecure or _is_loopback(parts.hostname or ""):
        return insecure
    raise InvalidInput(
        f"the {what} {parts.hostname} is reached over plain http://: data keys would cross the "
        "network in clear. Use https:// (and ca-file= for a private CA); if the network is "
        f"trusted and you really mean it, add {INSECURE_HTTP}=yes to the key URI")


def with_insecure_http(uri: str) -> str:
    """``uri`` with ``insecure-http=yes`` added (what ``--insecure-key-server`` does)."""
    if not uri.startswith(("vault-transit:", "aws-kms:")):
        raise InvalidInput("--insecure-key-server applies to vault-transit: and aws-kms: key URIs")
    if f"{INSECURE_HTTP}=" in uri:
        return uri
    return uri + ("&" if "?" in uri else "?") + f"{INSECURE_HTTP}=yes"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def positive_float(params: dict[str, str], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"key URI parameter {name} must be a number") from None
    if not 0 < value <= 3600:
        raise InvalidInput(f"key URI parameter {name} must be within (0, 3600]")
    return value


def check_source(source: str) -> str:
    """Validate a credential source (``env:NAME`` or ``file:/path``) without reading it."""
    kind, sep, where = source.partition(":")
    if not sep or kind not in ("env", "file") or not where:
        raise InvalidInput(
            f"a credential source must be env:NAME or file:/path, not {kind!r}:..."
        )
    return source


def read_secret(source: str, what: str) -> SecretBytes:
    """Read a credential from its source. Missing or unreadable -> :class:`KeyringError`."""
    kind, _, where = check_source(source).partition(":")
    if kind == "env":
        value = os.environ.get(where)
        if not value:
            raise KeyringError(f"the {what} is not set: export {where}")
        return SecretBytes(value.encode())
    path = Path(where).expanduser()
    check_private(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyringError(f"cannot read the {what} file {path.name}: {exc.strerror}") from None
    value_bytes = raw.rstrip(b"\r\n")
    if not value_bytes:
        raise KeyringError(f"the {what} file {path.name} is empty")
    return SecretBytes(value_bytes)
