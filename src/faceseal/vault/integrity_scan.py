"""``faceseal check``: open every record once and hold the store to what the key side signed.

Reported, each by name: records that do not open; subjects whose rows do not match their
authenticated inventory (a template deleted, added or moved outside the vault; see
:mod:`faceseal.vault.inventory`); subject keys with no subject (a subject deleted behind the
vault's back, or an erase that stopped before destroying the key: erasing again finishes it);
principal rows whose MAC does not verify. Any of them makes the result not ``ok`` (the CLI exits
5).

The scan is not one snapshot: a subject that looks wrong is read again on its own before it is
reported, so an enrolment racing the scan is not mistaken for tampering.
"""

from __future__ import annotations

from collections.abc import Callable

from faceseal.access.sealing import PrincipalSeal
from faceseal.keys.subject_keys import SubjectKeyStore
from faceseal.storage.base import TemplateStore
from faceseal.vault.inventory import InventorySigner, Tally
from faceseal.vault.records import RecordSealer
from faceseal.vault.results import CheckResult


def scan(store: TemplateStore, sealer: RecordSealer, subject_keys: SubjectKeyStore,
         inventory: InventorySigner, seal: PrincipalSeal, *,
         progress: Callable[[int, int], None] | None = None) -> CheckResult:
    secrets = subject_keys.for_tenant(None)
    records = 0
    total = sum(store.key_version_counts().values()) if progress else 0
    damaged: list[dict[str, str]] = []
    tallies: dict[tuple[str, str], Tally] = {}
    for batch in store.gallery(None):
        records += len(batch)
        if progress is not None:
            progress(records, max(total, records))
        _, bad = sealer.open(batch, secrets)
        damaged.extend({"tenant": r.tenant, "subject_id": r.subject_id,
                        "template_id": r.template_id} for r in bad)
        for row in batch:
            key = (row.tenant, row.subject_id)
            tallies[key] = inventory.add_one(tallies.get(key), row.tenant, row.subject_id,
                                             row.template_id)
    suspects: list[tuple[str, str]] = []
    for tenant in store.tenants():
        for subject in store.subjects(tenant):
            tally = tallies.pop((tenant, subject.subject_id), None)
            if tally is None or not inventory.vouches_for(tenant, subject.subject_id,
                                                          subject.inventory, tally):
                suspects.append((tenant, subject.subject_id))
    suspects.extend(tallies)  # rows whose subject row is gone (possible in the file store)
    mismatches = [m for m in (_recheck(store, inventory, t, s) for t, s in suspects) if m]
    orphans = sum(1 for tenant, subject in secrets if not store.subject_exists(tenant, subject))
    unverified = sorted(p.name for p in store.principals() if not seal.verifies(p))
    return CheckResult(records, damaged, orphans, mismatches, unverified)


def _recheck(store: TemplateStore, inventory: InventorySigner, tenant: str,
             subject_id: str) -> dict[str, str | int | None] | None:
    rows = store.subject_templates(tenant, subject_id)
    blob = store.inventories(tenant, [subject_id]).get(subject_id, b"")
    if inventory.matches(tenant, subject_id, blob, [r.template_id for r in rows]):
        return None
    opened = inventory.open(tenant, subject_id, blob)
    return {"tenant": tenant, "subject_id": subject_id,
            "inventory_templates": opened[1].count if opened is not None else None,
            "stored_templates": len(rows)}
