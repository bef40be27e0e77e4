"""The PKCS#11 provider: the KEK lives in an HSM token and never leaves it.

Key URI (RFC 7512 path attributes, plus query attributes)::

    pkcs11:token=<token label>;object=<key label>?module-path=/usr/lib/softhsm/libsofthsm2.so
          &pin-source=env:FACESEAL_PKCS11_PIN

* ``module-path``: the vendor's PKCS#11 library (default ``$FACESEAL_PKCS11_MODULE``).
* ``pin-source``: where the user PIN is read from, ``env:NAME`` (default
  ``env:FACESEAL_PKCS11_PIN``) or ``file:/path`` (0600). Never the PIN itself.

KEK versions are AES-256 secret-key objects that share the label ``object`` and carry their
version as ``CKA_ID`` (4 bytes, big-endian). They are generated inside the token with
``CKA_TOKEN``, ``CKA_SENSITIVE`` and ``CKA_EXTRACTABLE=false``: the token never lets them out.
Data keys are wrapped by the token with ``CKM_AES_GCM`` (96-bit random IV, 128-bit tag) and the
wrapping context as GCM associated data, so a blob only opens for the DEK version and vault it
was made for. Blob layout::

    b"P1" || KEK version (uint32 BE) || IV (12) || ciphertext || tag (16)

Errors: a wrong PIN is :class:`KeyringError` (the operator fixes it); a missing module, an absent
token or a failing device is :class:`KeyProviderUnavailable`; a blob that does not open is the
opaque :class:`DecryptionError`. Tokens report a bad GCM tag as a generic failure, so after a
failed unwrap the provider proves the token still works (one probe encryption) before calling the
blob bad: an ailing device is never taken for a tampered key.

PKCS#11 logs in per application, not per session, so every provider on one token in a process
shares one session (and the PIN that opened it).
"""

from __future__ import annotations

import hmac
import logging
import os
import struct
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from faceseal.crypto.aead import NONCE_BYTES, TAG_BYTES
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError, InvalidInput, KeyProviderUnavailable, KeyringError
from faceseal.keys.provider import KeyProvider, ProviderStatus
from faceseal.keys.uri import check_source, read_secret, split_query

log = logging.getLogger(__name__)

SCHEME = "pkcs11"
MODULE_ENV = "FACESEAL_PKCS11_MODULE"
DEFAULT_PIN_SOURCE = "env:FACESEAL_PKCS11_PIN"
_BLOB_MAGIC = b"P1"
_VERSION = struct.Struct(">I")
_HEADER_BYTES = len(_BLOB_MAGIC) + _VERSION.size
_AAD_LABEL = b"faceseal-pkcs11-dek\x00"
_PROBE = b"faceseal-pkcs11-health-probe"


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str
    object: str
    module_path: str
    pin_source: str

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        scheme, _, rest = uri.partition(":")
        if scheme != SCHEME:
            raise InvalidInput("not a pkcs11: key URI")
        path, params = split_query(rest, {"module-path", "pin-source"})
        attributes: dict[str, str] = {}
        for part in filter(None, path.split(";")):
            name, sep, value = part.partition("=")
            if not sep:
                raise InvalidInput(f"pkcs11 URI attribute without a value: {name!r}")
            if name == "pin-value":
                raise InvalidInput("a key URI must not contain the PIN; use pin-source=env:NAME")
            attributes[name] = unquote(value)
        unknown = set(attributes) - {"token", "object", "type"}
        if unknown:
            raise InvalidInput(f"unsupported pkcs11 URI attribute(s): {', '.join(sorted(unknown))}")
        if attributes.get("type", "secret-key") != "secret-key":
            raise InvalidInput("the pkcs11 KEK must be a secret-key object")
        token, label = attributes.get("token"), attributes.get("object")
        if not token or not label:
            raise InvalidInput("a pkcs11 key URI needs token=<label>;object=<key label>")
        module = params.get("module-path") or os.environ.get(MODULE_ENV, "")
        if not module:
            raise InvalidInput(f"a pkcs11 key URI needs module-path=... (or ${MODULE_ENV})")
        pin_source = check_source(params.get("pin-source", DEFAULT_PIN_SOURCE))
        return cls(token, label, module, pin_source)

    def canonical(self) -> str:
        return (f"pkcs11:token={self.token};object={self.object}"
                f"?module-path={self.module_path}&pin-source={self.pin_source}")


# --- one logged-in session per (module, token) in this process ----------------------------------


class _SharedSession:
    def __init__(self, session: Any, pin: SecretBytes) -> None:
        self.session = session
        self.pin = pin
        self.users = 0
        self.lock = threading.RLock()


_SESSIONS: dict[tuple[str, str], _SharedSession] = {}
_SESSIONS_LOCK = threading.Lock()


def _pkcs11() -> Any:
    try:
        import pkcs11  # noqa: PLC0415 - optional extra

    except ImportError:
        raise KeyProviderUnavailable(
            "the pkcs11 provider needs python-pkcs11: pip install 'faceseal[hsm]'"
        ) from None
    return pkcs11


def _unavailable(what: str, exc: Exception) -> KeyProviderUnavailable:
    # PKCS#11 exception names (TokenNotPresent, DeviceRemoved ...) carry no secret.
    return KeyProviderUnavailable(f"PKCS#11 {what} failed: {type(exc).__name__}")


def _login_error(exc: Exception) -> Exception:
    name = type(exc).__name__
    if name in ("PinIncorrect", "PinInvalid", "PinLenRange"):
        return KeyringError("the PKCS#11 token refused the PIN (wrong PIN)")
    if name in ("PinLocked", "PinExpired", "UserPinNotInitialized"):
        return KeyringError(f"the PKCS#11 token cannot log in: {name}")
    return _unavailable("login", exc)


def _acquire(uri: Pkcs11Uri) -> _SharedSession:
    pkcs11 = _pkcs11()
    key = (uri.module_path, uri.token)
    pin = read_secret(uri.pin_source, "PKCS#11 PIN")
    with _SESSIONS_LOCK:
        shared = _SESSIONS.get(key)
        if shared is not None:
            if not hmac.compare_digest(shared.pin.reveal(), pin.reveal()):
                raise KeyringError("the PKCS#11 token refused the PIN (wrong PIN)")
            shared.users += 1
            return shared
        if not os.path.exists(uri.module_path):
            raise KeyProviderUnavailable(f"PKCS#11 module not found: {uri.module_path}")
        try:
            lib = pkcs11.lib(uri.module_path)
        except pkcs11.PKCS11Error as exc:
            raise _unavailable("module load", exc) from None
        try:
            token = lib.get_token(token_label=uri.token)
        except pkcs11.exceptions.NoSuchToken:
            raise KeyProviderUnavailable(
                f"PKCS#11 token {uri.token!r} is not present") from None
        except pkcs11.PKCS11Error as exc:
            raise _unavailable("token lookup", exc) from None
        try:
            session = token.open(rw=True, user_pin=pin.reveal().decode())
        except pkcs11.PKCS11Error as exc:
            raise _login_error(exc) from None
        except UnicodeDecodeError:
            raise KeyringError("the PKCS#11 PIN is not valid UTF-8") from None
        shared = _SESSIONS[key] = _SharedSession(session, pin)
        shared.users = 1
        return shared


def _release(uri: Pkcs11Uri, shared: _SharedSession) -> None:
    with _SESSIONS_LOCK:
        shared.users -= 1
        if shared.users > 0:
            return
        _SESSIONS.pop((uri.module_path, uri.token), None)
        try:
            shared.session.close()
        except Exception:
            log.debug("closing the PKCS#11 session failed", exc_info=True)
        shared.pin.wipe()


class Pkcs11Provider(KeyProvider):
    """KEKs inside a PKCS#11 token. Use :meth:`open` or :meth:`create`."""

    kind = "pkcs11"

    def __init__(self, uri: Pkcs11Uri, shared: _SharedSession) -> None:
        self._uri = uri
        self._shared = shared
        self._closed = False
        self._keys: dict[int, Any] = {}
        self._load_keys()

    @classmethod
    def open(cls, uri: str) -> Pkcs11Provider:
        parsed = Pkcs11Uri.parse(uri)
        shared = _acquire(parsed)
        try:
            provider = cls(parsed, shared)
            if not provider._keys:
                raise KeyringError(
                    f"no KEK labelled {parsed.object!r} in PKCS#11 token {parsed.token!r}")
        except BaseException:
            _release(parsed, shared)
            raise
        return provider

    @classmethod
    def create(cls, uri: str) -> Pkcs11Provider:
        """Open the token; generate KEK version 1 inside it unless the label exists already."""
        parsed = Pkcs11Uri.parse(uri)
        shared = _acquire(parsed)
        try:
            provider = cls(parsed, shared)
            if not provider._keys:
                provider._generate(1)
        except BaseException:
            _release(parsed, shared)
            raise
        return provider

    # --- token access ----------------------------------------------------------------------------

    def _load_keys(self) -> None:
        pkcs11 = _pkcs11()
        attribute, object_class = pkcs11.Attribute, pkcs11.ObjectClass
        with self._shared.lock:
            try:
                found = list(self._shared.session.get_objects({
                    attribute.CLASS: object_class.SECRET_KEY,
                    attribute.LABEL: self._uri.object,
                }))
                keys: dict[int, Any] = {}
                for obj in found:
                    ident = bytes(obj[attribute.ID])
                    if len(ident) == _VERSION.size:
                        keys[_VERSION.unpack(ident)[0]] = obj
            except pkcs11.PKCS11Error as exc:
                raise _unavailable("key lookup", exc) from None
        self._keys = keys

    def _generate(self, version: int) -> None:
        pkcs11 = _pkcs11()
        attribute = pkcs11.Attribute
        with self._shared.lock:
            try:
                key = self._shared.session.generate_key(
                    pkcs11.KeyType.AES, 256, label=self._uri.object, id=_VERSION.pack(version),
                    store=True,
                    template={
                        attribute.TOKEN: True,
                        attribute.PRIVATE: True,
                        attribute.SENSITIVE: True,
                        attribute.EXTRACTABLE: False,
                        attribute.ENCRYPT: True,
                        attribute.DECRYPT: True,
                        attribute.WRAP: False,
                        attribute.UNWRAP: False,
                        attribute.SIGN: False,
                        attribute.VERIFY: False,
                        attribute.DERIVE: False,
                    },
                )
            except pkcs11.PKCS11Error as exc:
                raise _unavailable("key generation", exc) from None
        self._keys[version] = key
        log.info("generated PKCS#11 KEK version %d in token %s", version, self._uri.token)

    def _check_open(self) -> None:
        if self._closed:
            raise KeyProviderUnavailable("the PKCS#11 provider is closed")

    def _active(self) -> int:
        if not self._keys:
            raise KeyringError(f"no KEK labelled {self._uri.object!r} in the token")
        return max(self._keys)

    # --- the provider interface ------------------------------------------------------------------

    def wrap(self, key: SecretBytes, context: bytes) -> bytes:
        self._check_open()
        pkcs11 = _pkcs11()
        version = self._active()
        nonce = os.urandom(NONCE_BYTES)
        with self._shared.lock:
            try:
                sealed = self._keys[version].encrypt(
                    key.reveal(), mechanism=pkcs11.Mechanism.AES_GCM,
                    mechanism_param=pkcs11.mechanisms.GCMParams(nonce, _AAD_LABEL + context),
                )
            except pkcs11.PKCS11Error as exc:
                raise _unavailable("wrap", exc) from None
        return _BLOB_MAGIC + _VERSION.pack(version) + nonce + bytes(sealed)

    def unwrap(self, wrapped: bytes, context: bytes) -> SecretBytes:
        self._check_open()
        pkcs11 = _pkcs11()
        version = self.kek_version_of(wrapped)
        body = wrapped[_HEADER_BYTES:]
        if len(body) < NONCE_BYTES + TAG_BYTES + 1:
            raise DecryptionError()
        kek = self._keys.get(version)
        if kek is None:
            self._load_keys()  # another process may have rotated meanwhile
            kek = self._keys.get(version)
            if kek is None:
                raise DecryptionError()
        nonce, sealed = body[:NONCE_BYTES], body[NONCE_BYTES:]
        with self._shared.lock:
            try:
                plain = kek.decrypt(
                    sealed, mechanism=pkcs11.Mechanism.AES_GCM,
                    mechanism_param=pkcs11.mechanisms.GCMParams(nonce, _AAD_LABEL + context),
                )
            except pkcs11.PKCS11Error as exc:
                failure = exc
            else:
                return SecretBytes(bytes(plain))
        # The token says only "failed". Tell a bad blob from an ailing token with one probe.
        self._probe(failure)
        raise DecryptionError()

    def _probe(self, failure: Exception) -> None:
        pkcs11 = _pkcs11()
        with self._shared.lock:
            try:
                self._keys[self._active()].encrypt(
                    _PROBE, mechanism=pkcs11.Mechanism.AES_GCM,
                    mechanism_param=pkcs11.mechanisms.GCMParams(os.urandom(NONCE_BYTES), b""),
                )
            except pkcs11.PKCS11Error:
                raise _unavailable("unwrap", failure) from None

    def kek_version_of(self, wrapped: bytes) -> int:
        if len(wrapped) < _HEADER_BYTES or not wrapped.startswith(_BLOB_MAGIC):
            raise DecryptionError()
        return int(_VERSION.unpack_from(wrapped, len(_BLOB_MAGIC))[0])

    def describe(self) -> ProviderStatus:
        self._check_open()
        self._load_keys()
        versions = tuple(sorted(self._keys))
        return ProviderStatus(
            kind=self.kind,
            location=self._uri.canonical(),
            kek_versions=versions,
            active_version=max(versions) if versions else 0,
            details={"token": self._uri.token, "key_label": self._uri.object,
                     "mechanism": "CKM_AES_GCM", "extractable": "no"},
        )

    def rotate(self) -> int:
        self._check_open()
        self._load_keys()
        version = self._active() + 1
        self._generate(version)
        return version

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._keys.clear()
        _release(self._uri, self._shared)
