"""Upgrading a vault made before principals and configuration were signed (`faceseal migrate`).

A vault's key side says which integrity format its rows are in (``settings.integrity_version``
in the audit state). A new vault is signed from its first row. An older one has unsigned
principal rows, which authentication refuses, and an unsigned ``vault.json``; until it is
upgraded no key is accepted (the refusal says to run ``faceseal migrate``).

The upgrade is run by an admin scoped to every tenant, whose key is checked against its own
(still unsigned) row. It then, once:

1. snapshots on the key side the ids of the unsigned rows it will sign (a crash and a re-run sign
   exactly those, never a row inserted into the store in the meantime);
2. signs those rows, every subject's inventory and each tenant's stored answer policy, and
   writes an ``integrity.upgrade`` audit event, in one store transaction;
3. signs ``vault.json`` into the key side and copies the minimum decryption version there (the
   store can no longer lower it);
4. records the integrity format on the key side; from then on unsigned rows are never signed
   again: a row the store gains later without the vault's key is refused for good.

Rows that already carry a MAC that does not verify are left alone and reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from faceseal.access.apikeys import DUMMY_HASH, hashes_equal, parse_api_key
from faceseal.access.roles import Role, parse_roles
from faceseal.access.sealing import PrincipalSeal
from faceseal.audit.events import OUTCOME_OK, AuditEvent, new_request_id
from faceseal.audit.integrity import RowAuthenticator
from faceseal.audit.log import AuditLog
from faceseal.audit.state import INTEGRITY_SETTING, INTEGRITY_VERSION, AuditState
from faceseal.crypto.secret import SecretBytes
from faceseal.errors import AccessDenied, AuthenticationFailed, InvalidInput
from faceseal.storage.base import PrincipalRow, TemplateStore
from faceseal.vault import disclosure
from faceseal.vault.config import VaultConfig
from faceseal.vault.config_seal import seal_config
from faceseal.vault.inventory import InventorySigner
from faceseal.vault.results import Result

log = logging.getLogger(__name__)

UPGRADE_ACTION = "integrity.upgrade"
_SNAPSHOT = "integrity_upgrade_rows"
#: The key-side copy of the minimum decryption version (see :class:`KeySideFloor`).
MIN_VERSION_SETTING = "min_decrypt_version"
#: The key-side list of data-key versions the vault created (see :class:`KeySideLedger`).
DATA_KEYS_SETTING = "data_key_versions"
NOT_UPGRADED = (
    "this vault predates signed principals and configuration: run `faceseal migrate` with an "
    "all-tenant admin's key (--key-file FILE or $FACESEAL_API_KEY) to sign them"
)


@dataclass(frozen=True)
class IntegrityUpgrade(Result):
    """What `faceseal migrate` signed."""

    upgraded: bool  # False: the vault was signed already, nothing was done
    principals_signed: list[str]
    principals_refused: list[str]  # rows carrying a MAC that does not verify (left alone)
    config_signed: bool
    min_decrypt_version: int
    inventories_signed: int = 0


class KeySideFloor:
    """The minimum decryption version kept in the audit state file (the key directory): the
    template store's ``meta`` copy can be edited or replayed, this one only ever rises."""

    def __init__(self, state: AuditState) -> None:
        self._state = state

    def get(self) -> int:
        return self._state.floor(MIN_VERSION_SETTING)

    def raise_to(self, version: int) -> int:
        return self._state.raise_floor(MIN_VERSION_SETTING, version)


class KeySideLedger:
    """The data-key versions this vault created, kept in the audit state file (see
    :class:`~faceseal.keys.datakeys.DataKeyLedger`)."""

    def __init__(self, state: AuditState) -> None:
        self._state = state

    def known(self) -> frozenset[int] | None:
        return self._state.versions(DATA_KEYS_SETTING)

    def add(self, version: int) -> None:
        self._state.add_version(DATA_KEYS_SETTING, version)


def _sign_inventories(store: TemplateStore, inventory: InventorySigner) -> int:
    """Sign the inventory of every subject that has none yet, from its rows as they are now
    (the upgrade is the moment the vault starts vouching for them)."""
    signed = 0
    for tenant in store.tenants():
        unsigned = [s.subject_id for s in store.subjects(tenant) if not s.inventory]
        for start in range(0, len(unsigned), 1000):
            chunk = unsigned[start:start + 1000]
            store.set_inventories(tenant, {
                subject: inventory.seal(tenant, subject, inventory.tally(
                    tenant, subject, [r.template_id
                                      for r in store.subject_templates(tenant, subject)]))
                for subject in chunk})
            signed += len(chunk)
    return signed


def _admin_row(store: TemplateStore, seal: PrincipalSeal,
               api_key: str | bytes | SecretBytes | None) -> PrincipalRow:
    """The all-tenant admin whose key this is, checked against its own (legacy) row."""
    parsed = parse_api_key(api_key) if api_key else None
    if parsed is None:
        raise AuthenticationFailed(NOT_UPGRADED)
    row = store.principal_by_key_id(parsed.key_id)
    if not hashes_equal(row.key_hash if row is not None else DUMMY_HASH, parsed.hash()) \
            or row is None:
        raise AuthenticationFailed("the API key was refused (unknown, revoked or malformed)")
    if (row.mac and not seal.verifies(row)) or seal.revoked_at(row) is not None:
        raise AuthenticationFailed("the API key was refused (unknown, revoked or malformed)")
    if Role.ADMIN not in parse_roles([row.role]) or row.tenant is not None:
        raise AccessDenied(f"access denied to {row.name}: signing the vault needs an admin "
                           "scoped to every tenant")
    return row


def upgrade(*, store: TemplateStore, state: AuditState, seal: PrincipalSeal,
            auth: RowAuthenticator, audit: AuditLog, config: VaultConfig,
            api_key: str | bytes | SecretBytes | None,
            inventory: InventorySigner) -> IntegrityUpgrade:
    """Sign a legacy vault's principals and configuration (see the module doc)."""
    if seal.current():
        return IntegrityUpgrade(False, [], [], False, state.floor(MIN_VERSION_SETTING) or 1, 0)
    admin = _admin_row(store, seal, api_key)
    snapshot = state.setting(_SNAPSHOT)
    if snapshot:
        chosen = set(json.loads(snapshot))
    else:
        chosen = {r.principal_id for r in store.principals() if not r.mac}
        state.set_setting(_SNAPSHOT, json.dumps(sorted(chosen)))
    rows = store.principals()
    to_sign = [r for r in rows if r.principal_id in chosen and not seal.verifies(r)]
    refused = sorted(r.name for r in rows if r.mac and not seal.verifies(r)
                     and r.principal_id not in chosen)
    refused += sorted(r.name for r in rows if not r.mac and r.principal_id not in chosen)
    with store.transaction():
        for row in to_sign:
            store.set_principal_mac(row.principal_id, seal.sign(row).mac)
        subjects = _sign_inventories(store, inventory)
        for tenant in store.tenants():  # policies set before they were signed
            if store.get_meta(disclosure.META_PREFIX + tenant) is not None:
                disclosure.save_policy(store, disclosure.load_policy(
                    store, tenant, config.models()), auth)
        record = audit.append(AuditEvent(
            principal=admin.name, role=Role.ADMIN.value, action=UPGRADE_ACTION,
            outcome=OUTCOME_OK, request_id=new_request_id(),
            detail={"signed": sorted(r.name for r in to_sign), "refused": refused,
                    "inventories": subjects}))
    audit.committed(record)
    seal_config(config, state, auth)
    meta = store.get_meta(MIN_VERSION_SETTING)
    try:
        minimum = state.raise_floor(MIN_VERSION_SETTING, int(meta) if meta else 1)
    except ValueError:
        raise InvalidInput("the store's min_decrypt_version is not a number") from None
    for info in store.load_data_keys():  # what the store holds now is the vault's from here on
        state.add_version(DATA_KEYS_SETTING, info.version)
    state.set_setting(INTEGRITY_SETTING, str(INTEGRITY_VERSION))
    state.set_setting(_SNAPSHOT, "")
    log.info("signed %d principal(s) and the configuration; %d row(s) left unsigned",
             len(to_sign), len(refused))
    return IntegrityUpgrade(True, sorted(r.name for r in to_sign), refused, True, minimum,
                            subjects)
