"""The AWS KMS provider (through ``boto3``).

Key URI::

    aws-kms:alias/<name>?region=eu-west-1&profile=<profile>&endpoint=<url>&timeout=10&attempts=3

The key part is an alias (``alias/NAME`` or an alias ARN; recommended, needed for
``keys rotate --kek``), a key id or a key ARN. Credentials come from boto3's usual chain
(environment, shared config/profile, instance or task role), never from the URI. ``endpoint``
points at a KMS-compatible endpoint (a VPC endpoint; the tests use the moto emulator).

Data keys come from ``GenerateDataKey`` (AES_256) and open with ``Decrypt``; both bind the
wrapping context as the KMS *encryption context* ``{"faceseal:context": <hex>}``, so a blob only
opens for the DEK version and vault it was made for (and CloudTrail shows which). ``rewrap`` is
``ReEncrypt`` (the data key never leaves KMS).

KEK versions: KMS's own automatic rotation is transparent (old blobs keep opening and nothing
needs rewrapping). ``keys rotate --kek`` does the documented manual rotation: it creates a new KMS
key tagged ``faceseal-kek-version=N+1`` and points the alias at it; the previous keys stay enabled
so that old blobs still open until they are rewrapped. Blob layout::

    b"A1" || KEK version (uint32 BE) || KMS ciphertext blob

Errors: connection failures, timeouts, throttling and KMS-internal errors are
:class:`KeyProviderUnavailable`; missing or refused credentials and an unknown alias are
:class:`KeyringError`; ``InvalidCiphertext``/``IncorrectKey`` are the opaque
:class:`DecryptionError`. A ``Decrypt`` refused as ``AccessDenied``/``NotFound`` is checked with one
``DescribeKey`` of the configured key: if that works the blob is bad (opaque error), otherwise the
credential or the service is the problem and is reported as such.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from faceseal.crypto.secret import SecretBytes
from faceseal.errors import DecryptionError, InvalidInput, KeyProviderUnavailable, KeyringError
from faceseal.keys.provider import KeyProvider, ProviderStatus
from faceseal.keys.uri import INSECURE_HTTP, plain_http_allowed, positive_float, split_query

log = logging.getLogger(__name__)

SCHEME = "aws-kms"
VERSION_TAG = "faceseal-kek-version"
_BLOB_MAGIC = b"A1"
_VERSION = struct.Struct(">I")
_HEADER_BYTES = len(_BLOB_MAGIC) + _VERSION.size
_CONTEXT_NAME = "faceseal:context"
_VERSION_NAME = "faceseal:kek-version"
T = TypeVar("T")

_DECRYPT_FAILURES = {"InvalidCiphertextException", "IncorrectKeyException",
                     "InvalidKeyUsageException"}
_MAYBE_BLOB = {"AccessDeniedException", "NotFoundException"}
_CREDENTIAL_FAILURES = {"AccessDeniedException", "UnrecognizedClientException",
                        "InvalidSignatureException", "ExpiredTokenException",
                        "IncompleteSignature", "InvalidClientTokenId", "NotFoundException",
                        "AuthFailure", "SignatureDoesNotMatch"}


@dataclass(frozen=True)
class KmsUri:
    key: str
    region: str | None
    profile: str | None
    endpoint: str | None
    timeout: float
    attempts: int = 3
    insecure_http: bool = False

    @classmethod
    def parse(cls, uri: str) -> KmsUri:
        scheme, _, rest = uri.partition(":")
        if scheme != SCHEME:
            raise InvalidInput("not an aws-kms: key URI")
        key, params = split_query(rest, {"region", "profile", "endpoint", "timeout", "attempts",
                                         INSECURE_HTTP})
        if not key:
            raise InvalidInput("an aws-kms key URI needs a key: aws-kms:alias/NAME?region=...")
        region = params.get("region")
        if region is None and key.startswith("arn:"):
            fields = key.split(":")
            region = fields[3] if len(fields) > 3 and fields[3] else None
        endpoint = params.get("endpoint") or None
        if endpoint is not None and not endpoint.startswith(("https://", "http://")):
            raise InvalidInput("the aws-kms endpoint must be an http(s) URL")
        insecure = (plain_http_allowed(endpoint, params, "KMS endpoint")
                    if endpoint is not None else False)
        attempts = positive_float(params, "attempts", 3)
        if attempts != int(attempts) or attempts > 10:
            raise InvalidInput("key URI parameter attempts must be an integer within 1..10")
        return cls(key, region, params.get("profile") or None, endpoint,
                   positive_float(params, "timeout", 10.0), int(attempts), insecure)

    @property
    def is_alias(self) -> bool:
        return self.key.startswith("alias/") or ":alias/" in self.key

    @property
    def alias_name(self) -> str:
        return self.key[self.key.index("alias/"):]

    def canonical(self) -> str:
        extras = [f"{name}={value}" for name, value in (("region", self.region),
                  ("profile", self.profile), ("endpoint", self.endpoint)) if value]
        if self.timeout != 10.0:
            extras.append(f"timeout={self.timeout:g}")
        if self.attempts != 3:
            extras.append(f"attempts={self.attempts}")
        if self.insecure_http:
            extras.append(f"{INSECURE_HTTP}=yes")
        return f"{SCHEME}:{self.key}" + ("?" + "&".join(extras) if extras else "")


def _context(context: bytes, version: int) -> dict[str, str]:
    # The KEK version in our blob header is bound too, so editing it breaks the blob.
    return {_CONTEXT_NAME: context.hex(), _VERSION_NAME: str(version)}


class AwsKmsProvider(KeyProvider):
    """KEKs in AWS KMS. Use :meth:`open` or :meth:`create`."""

    kind = "aws-kms"

    def __init__(self, uri: KmsUri, client: Any) -> None:
        self._uri = uri
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def _connect(cls, uri: str) -> AwsKmsProvider:
        parsed = KmsUri.parse(uri)
        try:
            import boto3  # noqa: PLC0415 - optional extra
            from botocore.config import Config  # noqa: PLC0415
        except ImportError:
            raise KeyProviderUnavailable(
                "the aws-kms provider needs boto3: pip install 'faceseal[aws]'") from None
        botocore = _botocore()
        # botocore logs request and response bodies at DEBUG: data keys included. Never let it.
        for name in ("botocore", "boto3"):
            logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
        config = Config(connect_timeout=parsed.timeout, read_timeout=parsed.timeout,
                        retries={"mode": "standard",
                                 "total_max_attempts": parsed.attempts})
        try:
            session = boto3.session.Session(profile_name=parsed.profile)
            client = session.client("kms", region_name=parsed.region,
                                    endpoint_url=parsed.endpoint, config=config)
        except botocore.exceptions.ProfileNotFound:
            raise KeyringError(f"AWS profile {parsed.profile!r} not found") from None
        except botocore.exceptions.NoRegionError:
            raise KeyringError("no AWS region: add ?region=... to the key URI") from None
        return cls(parsed, client)

    @classmethod
    def open(cls, uri: str) -> AwsKmsProvider:
        provider = cls._connect(uri)
        provider._describe_target()
        return provider

    @classmethod
    def create(cls, uri: str) -> AwsKmsProvider:
        """Use the key the URI names; for an alias that does not exist yet, create a
        symmetric KMS key (tagged version 1) and the alias."""
        provider = cls._connect(uri)
        botocore = _botocore()

        def exists() -> bool:
            try:
                provider._client.describe_key(KeyId=provider._uri.key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NotFoundException":
                    return False
                raise
            return True

        if not provider._call(exists):
            if not provider._uri.is_alias:
                raise KeyringError(f"KMS key {provider._uri.key!r} does not exist")
            provider._new_key(1)
        provider._describe_target()
        return provider

    # --- plumbing --------------------------------------------------------------------------------

    def _call(self, operation: Callable[[], T], *, decrypting: bool = False) -> T:
        botocore = _botocore()
        try:
            return operation()
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if decrypting and code in _DECRYPT_FAILURES:
                raise DecryptionError() from None
            if decrypting and code in _MAYBE_BLOB:
                self._describe_target()  # raises if the credential or the service is at fault
                raise DecryptionError() from None
            if code in _CREDENTIAL_FAILURES:
                raise KeyringError(f"AWS KMS refused the request: {code}") from None
            raise KeyProviderUnavailable(f"AWS KMS failed: {code or 'error'}") from None
        except botocore.exceptions.NoCredentialsError:
            raise KeyringError("no AWS credentials found (environment, profile or role)") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise KeyProviderUnavailable(
                f"AWS KMS is unreachable: {type(exc).__name__}") from None

    def _describe_target(self) -> tuple[str, int]:
        """The KMS key the URI points at now, and its faceseal KEK version (1 if untagged)."""
        metadata = self._call(lambda: self._client.describe_key(KeyId=self._uri.key))
        key_id = str(metadata["KeyMetadata"]["KeyId"])
        if metadata["KeyMetadata"].get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT":
            raise KeyringError("the KMS key must be a symmetric (SYMMETRIC_DEFAULT) key")
        tags = self._call(lambda: self._client.list_resource_tags(KeyId=key_id))
        version = 1
        for tag in tags.get("Tags", []):
            if tag.get("TagKey") == VERSION_TAG:
                try:
                    version = int(tag["TagValue"])
                except ValueError:
                    raise KeyringError(f"the KMS key's {VERSION_TAG} tag is not a number") from None
        return key_id, version

    def _new_key(self, version: int) -> str:
        created = self._call(lambda: self._client.create_key(
            Description=f"faceseal KEK version {version} ({self._uri.alias_name})",
            KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT",
            Tags=[{"TagKey": VERSION_TAG, "TagValue": str(version)}]))
        key_id = str(created["KeyMetadata"]["KeyId"])
        alias = self._uri.alias_name
        if version == 1:
            self._call(lambda: self._client.create_alias(AliasName=alias, TargetKeyId=key_id))
        else:
            self._call(lambda: self._client.update_alias(AliasName=alias, TargetKeyId=key_id))
        log.info("KMS alias %s now points at KEK version %d", alias, version)
        return key_id

    @staticmethod
    def _split(wrapped: bytes) -> tuple[int, bytes]:
        if len(wrapped) <= _HEADER_BYTES or not wrapped.startswith(_BLOB_MAGIC):
            raise DecryptionError()
        return int(_VERSION.unpack_from(wrapped, len(_BLOB_MAGIC))[0]), wrapped[_HEADER_BYTES:]

    # --- the provider interface ------------------------------------------------------------------

    def wrap(self, key: SecretBytes, context: bytes) -> bytes:
        with self._lock:
            _, version = self._describe_target()
            response = self._call(lambda: self._client.encrypt(
                KeyId=self._uri.key, Plaintext=key.reveal(),
                EncryptionContext=_context(context, version)))
        return _BLOB_MAGIC + _VERSION.pack(version) + bytes(response["CiphertextBlob"])

    def generate_data_key(self, context: bytes) -> tuple[SecretBytes, bytes]:
        with self._lock:
            _, version = self._describe_target()
            response = self._call(lambda: self._client.generate_data_key(
                KeyId=self._uri.key, KeySpec="AES_256",
                EncryptionContext=_context(context, version)))
        return (SecretBytes(bytes(response["Plaintext"])),
                _BLOB_MAGIC + _VERSION.pack(version) + bytes(response["CiphertextBlob"]))

    def unwrap(self, wrapped: bytes, context: bytes) -> SecretBytes:
        version, blob = self._split(wrapped)
        with self._lock:
            response = self._call(lambda: self._client.decrypt(
                CiphertextBlob=blob, EncryptionContext=_context(context, version)),
                decrypting=True)
        return SecretBytes(bytes(response["Plaintext"]))

    def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        source_version, blob = self._split(wrapped)
        with self._lock:
            _, version = self._describe_target()
            response = self._call(lambda: self._client.re_encrypt(
                CiphertextBlob=blob, SourceEncryptionContext=_context(context, source_version),
                DestinationKeyId=self._uri.key,
                DestinationEncryptionContext=_context(context, version)),
                decrypting=True)
        return _BLOB_MAGIC + _VERSION.pack(version) + bytes(response["CiphertextBlob"])

    def kek_version_of(self, wrapped: bytes) -> int:
        return self._split(wrapped)[0]

    def describe(self) -> ProviderStatus:
        key_id, version = self._describe_target()
        return ProviderStatus(
            kind=self.kind,
            location=self._uri.canonical(),
            # Earlier versions are the keys the alias pointed at before; faceseal never deletes
            # them (schedule their deletion in KMS once `keys status` shows no DEK needs them).
            kek_versions=tuple(range(1, version + 1)),
            active_version=version,
            details={"key_id": key_id, "alias": self._uri.alias_name if self._uri.is_alias
                     else "", "endpoint": self._uri.endpoint or "default"},
        )

    def rotate(self) -> int:
        if not self._uri.is_alias:
            raise InvalidInput(
                "rotating an aws-kms KEK needs an alias URI (aws-kms:alias/NAME); for a key id, "
                "enable KMS automatic rotation instead (transparent, no rewrap needed)")
        with self._lock:
            _, version = self._describe_target()
            self._new_key(version + 1)
        return version + 1


def _botocore() -> Any:
    import botocore.exceptions  # noqa: PLC0415 - optional extra

    return botocore
