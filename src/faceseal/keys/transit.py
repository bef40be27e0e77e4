"""The HashiCorp Vault / OpenBao transit provider (through ``hvac``).

Key URI::

    vault-transit:https://bao.example:8200/<mount>/<key name>?token-source=env:VAULT_TOKEN
                 &namespace=<ns>&ca-file=/path/ca.pem&timeout=10

* ``<mount>`` is the transit engine's mount path (may contain ``/``), ``<key name>`` the key.
* ``token-source``: ``env:NAME`` (default ``env:VAULT_TOKEN``) or ``file:/path`` (0600). The
  token itself never appears in the URI, in ``vault.json`` or in any message.
* ``timeout``: seconds per request (default 10).

The key is ``aes256-gcm96`` with ``derived=true`` and ``exportable=false``: every operation passes
the wrapping context as the key-derivation context, so a blob only opens for the DEK version and
vault it was made for. Data keys are made by ``datakey/plaintext``, opened by ``decrypt`` (batch),
moved to the newest key version by ``rewrap``; ``keys rotate --kek`` calls ``rotate``. The server
keeps every key version (down to its ``min_decryption_version``), so old blobs stay readable.

Blob layout: ``b"T1" || <transit ciphertext, ASCII "vault:vN:...">``.

Errors: connection failures, timeouts, 5xx and a sealed server are
:class:`KeyProviderUnavailable`; a refused token (401/403) or a missing key (404) is
:class:`KeyringError`; a 400 on decrypt/rewrap (bad tag, wrong context, mangled ciphertext) is the
opaque :class:`DecryptionError`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError, InvalidInput, KeyProviderUnavailable, KeyringError
from faceseal.keys.provider import KeyProvider, ProviderStatus
from faceseal.keys.uri import (
    INSECURE_HTTP,
    check_source,
    plain_http_allowed,
    positive_float,
    read_secret,
    split_query,
)

log = logging.getLogger(__name__)

SCHEME = "vault-transit"
DEFAULT_TOKEN_SOURCE = "env:VAULT_TOKEN"  # noqa: S105 - the name of a variable, not a token
_BLOB_MAGIC = b"T1"
_CIPHERTEXT = re.compile(rb"^vault:v([0-9]{1,9}):[A-Za-z0-9+/=]+$")
T = TypeVar("T")


@dataclass(frozen=True)
class TransitUri:
    address: str
    mount: str
    key: str
    token_source: str
    namespace: str | None
    ca_file: str | None
    timeout: float
    insecure_http: bool = False

    @classmethod
    def parse(cls, uri: str) -> TransitUri:
        scheme, _, rest = uri.partition(":")
        if scheme != SCHEME:
            raise InvalidInput("not a vault-transit: key URI")
        url, params = split_query(rest, {"token-source", "namespace", "ca-file", "timeout",
                                         INSECURE_HTTP})
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                "a vault-transit key URI looks like vault-transit:https://host:8200/transit/KEY")
        if parts.username or parts.password:
            raise InvalidInput("a key URI must not contain credentials")
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) < 2:
            raise InvalidInput("a vault-transit key URI needs /<mount>/<key name> after the host")
        insecure = plain_http_allowed(url, params, "transit server")
        return cls(
            address=f"{parts.scheme}://{parts.netloc}",
            mount="/".join(segments[:-1]),
            key=segments[-1],
            token_source=check_source(params.get("token-source", DEFAULT_TOKEN_SOURCE)),
            namespace=params.get("namespace") or None,
            ca_file=params.get("ca-file") or None,
            timeout=positive_float(params, "timeout", 10.0),
            insecure_http=insecure,
        )

    def canonical(self) -> str:
        """The URI again (it holds no credential: the token source only names where it is)."""
        extras = [f"token-source={self.token_source}"]
        extras += [f"{name}={value}" for name, value in (("namespace", self.namespace),
                   ("ca-file", self.ca_file)) if value]
        if self.timeout != 10.0:
            extras.append(f"timeout={self.timeout:g}")
        if self.insecure_http:
            extras.append(f"{INSECURE_HTTP}=yes")
        return f"{SCHEME}:{self.address}/{self.mount}/{self.key}?" + "&".join(extras)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TransitProvider(KeyProvider):
    """KEKs in a transit engine. Use :meth:`open` or :meth:`create`."""

    kind = "vault-transit"

    def __init__(self, uri: TransitUri, client: Any) -> None:
        self._uri = uri
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def _connect(cls, uri: str) -> TransitProvider:
        parsed = TransitUri.parse(uri)
        try:
            import hvac  # noqa: PLC0415 - optional extra
        except ImportError:
            raise KeyProviderUnavailable(
                "the vault-transit provider needs hvac: pip install 'faceseal[vault]'") from None
        token = read_secret(parsed.token_source, "transit token")
        verify: bool | str = parsed.ca_file or True
        client = hvac.Client(url=parsed.address, token=token.reveal().decode(),
                             namespace=parsed.namespace, verify=verify, timeout=parsed.timeout)
        token.wipe()
        return cls(parsed, client)

    @classmethod
    def open(cls, uri: str) -> TransitProvider:
        provider = cls._connect(uri)
        provider._read_key()  # proves the server, the token and the key, once
        return provider

    @classmethod
    def create(cls, uri: str) -> TransitProvider:
        """Create the transit key (derived, not exportable) unless it exists; check it if so."""
        provider = cls._connect(uri)
        hvac = _hvac()

        def exists() -> bool:
            try:
                provider._transit.read_key(provider._uri.key, mount_point=provider._uri.mount)
            except hvac.exceptions.InvalidPath:
                return False
            return True

        if not provider._call(exists):
            provider._call(lambda: provider._transit.create_key(
                provider._uri.key, key_type="aes256-gcm96", derived=True, exportable=False,
                allow_plaintext_backup=False, mount_point=provider._uri.mount))
            log.info("created transit key %s", provider._uri.key)
        provider._read_key()
        return provider

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def _transit(self) -> Any:
        return self._client.secrets.transit

    def _call(self, operation: Callable[[], T], *, decrypting: bool = False) -> T:
        hvac = _hvac()
        requests = _requests()
        try:
            return operation()
        except hvac.exceptions.InvalidRequest:
            if decrypting:
                raise DecryptionError() from None
            raise KeyProviderUnavailable("the transit engine rejected a request") from None
        except (hvac.exceptions.Unauthorized, hvac.exceptions.Forbidden):
            raise KeyringError(
                "the transit server refused the token (permission denied); check the token "
                f"source {self._uri.token_source.split(':')[0]}:... and its policy") from None
        except hvac.exceptions.InvalidPath:
            raise KeyringError(
                f"transit key {self._uri.key!r} does not exist at mount {self._uri.mount!r}"
            ) from None
        except hvac.exceptions.VaultDown:
            raise KeyProviderUnavailable("the transit server is sealed or down") from None
        except hvac.exceptions.VaultError as exc:
            raise KeyProviderUnavailable(
                f"the transit server failed: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise KeyProviderUnavailable(
                f"the transit server {self._uri.address} is unreachable: {type(exc).__name__}"
            ) from None

    def _read_key(self) -> dict[str, Any]:
        with self._lock:
            data = self._call(lambda: self._transit.read_key(
                self._uri.key, mount_point=self._uri.mount))["data"]
        if not data.get("derived") or data.get("type") != "aes256-gcm96":
            raise KeyringError(
                f"transit key {self._uri.key!r} must be aes256-gcm96 with derived=true")
        if data.get("exportable"):
            raise KeyringError(f"transit key {self._uri.key!r} is exportable; faceseal refuses it")
        return dict(data)

    @staticmethod
    def _ciphertext(wrapped: bytes) -> str:
        if not wrapped.startswith(_BLOB_MAGIC) or not _CIPHERTEXT.match(wrapped[2:]):
            raise DecryptionError()
        return wrapped[2:].decode("ascii")

    @staticmethod
    def _plaintext(encoded: str) -> SecretBytes:
        try:
            return SecretBytes(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise DecryptionError() from None

    # --- the provider interface ------------------------------------------------------------------

    def wrap(self, key: SecretBytes, context: bytes) -> bytes:
        with self._lock:
            response = self._call(lambda: self._transit.encrypt_data(
                self._uri.key, _b64(key.reveal()), context=_b64(context),
                mount_point=self._uri.mount))
        return _BLOB_MAGIC + str(response["data"]["ciphertext"]).encode("ascii")

    def generate_data_key(self, context: bytes) -> tuple[SecretBytes, bytes]:
        with self._lock:
            response = self._call(lambda: self._transit.generate_data_key(
                self._uri.key, key_type="plaintext", context=_b64(context), bits=256,
                mount_point=self._uri.mount))
        data = response["data"]
        return (self._plaintext(data["plaintext"]),
                _BLOB_MAGIC + str(data["ciphertext"]).encode("ascii"))

    def unwrap(self, wrapped: bytes, context: bytes) -> SecretBytes:
        ciphertext = self._ciphertext(wrapped)
        with self._lock:
            response = self._call(lambda: self._transit.decrypt_data(
                self._uri.key, ciphertext, context=_b64(context), mount_point=self._uri.mount),
                decrypting=True)
        return self._plaintext(response["data"]["plaintext"])

    def unwrap_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[SecretBytes | None]:
        """One ``decrypt`` call with ``batch_input`` for all of them."""
        results: list[SecretBytes | None] = [None] * len(items)
        batch: list[dict[str, str]] = []
        positions: list[int] = []
        for index, (wrapped, context) in enumerate(items):
            try:
                batch.append({"ciphertext": self._ciphertext(wrapped), "context": _b64(context)})
                positions.append(index)
            except DecryptionError:
                continue
        if not batch:
            return results
        hvac = _hvac()

        def decrypt() -> Any:
            try:
                return self._transit.decrypt_data(self._uri.key, "", batch_input=batch,
                                                  mount_point=self._uri.mount)
            except hvac.exceptions.InvalidRequest as exc:
                # A batch in which some items failed answers 400 with per-item results.
                body = exc.json if isinstance(exc.json, dict) else {}
                if "batch_results" in (body.get("data") or {}):
                    return body
                raise

        with self._lock:
            response = self._call(decrypt, decrypting=True)
        for index, item in zip(positions, response["data"]["batch_results"], strict=True):
            if item.get("error") or not item.get("plaintext"):
                continue
            try:
                results[index] = self._plaintext(item["plaintext"])
            except DecryptionError:
                continue
        return results

    def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Server-side ``rewrap``: the data key is never decrypted outside the server."""
        ciphertext = self._ciphertext(wrapped)
        with self._lock:
            response = self._call(lambda: self._transit.rewrap_data(
                self._uri.key, ciphertext, context=_b64(context), mount_point=self._uri.mount),
                decrypting=True)
        return _BLOB_MAGIC + str(response["data"]["ciphertext"]).encode("ascii")

    def kek_version_of(self, wrapped: bytes) -> int:
        match = _CIPHERTEXT.match(wrapped[2:]) if wrapped.startswith(_BLOB_MAGIC) else None
        if match is None:
            raise DecryptionError()
        return int(match.group(1))

    def describe(self) -> ProviderStatus:
        data = self._read_key()
        versions = tuple(sorted(int(v) for v in data.get("keys", {})))
        return ProviderStatus(
            kind=self.kind,
            location=self._uri.canonical(),
            kek_versions=versions,
            active_version=int(data["latest_version"]),
            details={"key": self._uri.key, "mount": self._uri.mount,
                     "min_decryption_version": str(data.get("min_decryption_version", "")),
                     "derived": "yes", "exportable": "no"},
        )

    def rotate(self) -> int:
        with self._lock:
            self._call(lambda: self._transit.rotate_key(self._uri.key,
                                                        mount_point=self._uri.mount))
        return int(self._read_key()["latest_version"])

    def close(self) -> None:
        adapter = getattr(self._client, "adapter", None)
        if adapter is not None:
            adapter.close()


def _hvac() -> Any:
    import hvac  # noqa: PLC0415 - optional extra

    return hvac


def _requests() -> Any:
    import requests  # noqa: PLC0415 - comes with hvac

    return requests
