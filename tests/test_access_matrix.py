"""Every role x operation x same/other tenant combination against an explicit allow/deny table.

Each case runs the real operation through the public API of one vault and checks three things:
the outcome matches the table; the newest audit event names the principal, the action and the
outcome (so every denial is audited); and a denied operation changed nothing in the database.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from faceseal.access import PERMISSIONS, Principal, Role, authorize
from faceseal.errors import AccessDenied
from faceseal.vault import Vault

from .conftest import EncodingOf, make_vault, vault_keys

SAME, OTHER = "t1", "t2"

# Principals under test: five roles scoped to tenant t1, and the two roles that may span tenants.
PRINCIPALS: dict[str, tuple[str, str | None]] = {
    "admin@t1": ("admin", SAME),
    "enroller@t1": ("enroller", SAME),
    "verifier@t1": ("verifier", SAME),
    "identifier@t1": ("identifier", SAME),
    "auditor@t1": ("auditor", SAME),
    "admin@all": ("admin", None),
    "auditor@all": ("auditor", None),
}

# Two characters per cell: the operation on the principal's own tenant (t1), then on another
# tenant (t2). "+" allowed, "-" denied, "." not applicable (the operation has no tenant argument:
# it acts on the caller's own scope). Global operations span every tenant: both cells ask the same.
EXPECTED_TABLE = """
operation          admin@t1 enroller@t1 verifier@t1 identifier@t1 auditor@t1 admin@all auditor@all
enroll             --       +-          --          --            --         --        --
verify             --       --          +-          --            --         --        --
identify           --       --          --          +-            --         --        --
erase              --       +-          --          --            --         --        --
subjects           --       +-          --          --            --         --        --
purge              +-       +-          --          --            --         ++        --
check              --       --          --          --            --         ++        --
tenants.retention  +-       --          --          --            --         ++        --
tenants.policy     +-       --          --          --            --         ++        --
tenants.list       +.       --          --          --            +.         +.        +.
principals.add     +-       --          --          --            --         ++        --
principals.list    +.       --          --          --            --         +.        --
principals.revoke  +-       --          --          --            --         ++        --
audit.read         --       --          --          --            +-         --        ++
audit.export       --       --          --          --            +-         --        ++
audit.verify       --       --          --          --            --         --        ++
"""


def _parse_table() -> dict[tuple[str, str, str], bool]:
    lines = [line.split() for line in EXPECTED_TABLE.strip().splitlines()]
    header, rows = lines[0][1:], lines[1:]
    assert header == list(PRINCIPALS)
    expected: dict[tuple[str, str, str], bool] = {}
    for operation, *cells in rows:
        assert len(cells) == len(header), operation
        for principal, cell in zip(header, cells, strict=True):
            for where, mark in zip(("same", "other"), cell, strict=True):
                assert mark in "+-.", (operation, principal, cell)
                if mark != ".":
                    expected[(operation, principal, where)] = mark == "+"
    return expected


EXPECTED = _parse_table()
OPERATIONS = sorted({op for op, _, _ in EXPECTED})
# Actions in the permission table that have no facade method yet (key custody and legacy import
# land with other issues); their rules are checked directly below.
NOT_YET_OPERATIONS = {"keys.status", "keys.rotate", "keys.retire", "keys.migrate", "import",
                      "config.save"}
# Permissions that are not operations of their own: checked directly below.
NOT_OPERATIONS = {"distances.exact"}


@dataclass
class World:
    vault: Vault  # bound to the test principal (every role, every tenant): sets things up
    admin: Vault  # the bootstrap admin (every tenant)
    observer: Vault  # an all-tenant auditor that reads the newest event
    views: dict[str, Vault]
    db: Path
    probe: np.ndarray
    counter: Iterator[int]

    def uid(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, encoding_of: EncodingOf) -> Iterator[World]:
    root = tmp_path_factory.mktemp("matrix")
    vault = make_vault(root / "vault", root / "keys")
    admin = vault.as_key(vault_keys(root / "vault").admin)
    views = {}
    for name, (role, tenant) in PRINCIPALS.items():
        key = admin.add_principal(name, [role], tenant=tenant, all_tenants=tenant is None).api_key
        views[name] = vault.as_key(key)
    observer = vault.as_key(admin.add_principal("observer", ["auditor"]).api_key)
    probe = encoding_of("obama-1.jpg")
    for tenant in (SAME, OTHER):
        vault.enroll("alice", [probe], tenant=tenant)
        vault.enroll("bob", [encoding_of("biden-1.jpg")], tenant=tenant)
    yield World(vault, admin, observer, views, root / "vault" / "templates.db", probe,
                itertools.count())
    vault.close()


def _prepare(world: World, operation: str, view: Vault, tenant: str) -> Callable[[], object]:
    """``operation`` as ``view`` on ``tenant``, ready to call (targets set up by the worker)."""
    w = world
    if operation == "erase":
        subject = w.uid("victim")
        w.vault.enroll(subject, [w.probe], tenant=tenant)
        return lambda: view.erase(subject, tenant=tenant)
    if operation == "principals.revoke":
        target = w.uid("target")
        w.admin.add_principal(target, ["verifier"], tenant=tenant)
        return lambda: view.revoke_principal(target)
    actions: dict[str, Callable[[], object]] = {
        "enroll": lambda: view.enroll(w.uid("new"), [w.probe], tenant=tenant),
        "verify": lambda: view.verify("alice", w.probe, tenant=tenant),
        "identify": lambda: view.identify(w.probe, tenant=tenant),
        "subjects": lambda: view.subjects(tenant=tenant),
        "purge": lambda: view.purge(100 * 365 * 86400.0, tenant=tenant, dry_run=True),
        "check": view.check,
        "tenants.retention": lambda: view.set_retention(tenant, 30 * 86400.0),
        "tenants.policy": lambda: view.set_tenant_policy(tenant, disclosure_level="band"),
        "tenants.list": view.tenants,
        "principals.add": lambda: view.add_principal(w.uid("p"), ["verifier"], tenant=tenant),
        "principals.list": view.principals,
        "audit.read": lambda: view.audit_tail(5, tenant=tenant),
        "audit.export": lambda: list(view.audit_export(tenant=tenant)),
        "audit.verify": view.audit_verify,
    }
    return actions[operation]


def _fingerprint(db: Path) -> list[object]:
    """Everything a denied operation must leave alone (read straight from the SQLite file)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("subjects", "templates", "principals", "tenants")]


CASES = sorted(EXPECTED)


@pytest.mark.parametrize(("operation", "principal", "where"), CASES,
                         ids=[f"{o}-{p}-{w}" for o, p, w in CASES])
def test_role_operation_tenant_matrix(world: World, operation: str, principal: str,
                                      where: str) -> None:
    allowed = EXPECTED[(operation, principal, where)]
    tenant = SAME if where == "same" else OTHER
    run = _prepare(world, operation, world.views[principal], tenant)
    before = _fingerprint(world.db)
    if allowed:
        run()
    else:
        with pytest.raises(AccessDenied):
            run()
        assert _fingerprint(world.db) == before, "a denied operation changed the store"
    newest = world.observer.audit_tail(1)[-1]
    assert (newest["principal"], newest["action"], newest["outcome"]) == (
        principal, operation, "ok" if allowed else "denied")
    if not allowed:
        assert newest["detail"]["reason"]


def test_table_covers_every_permission() -> None:
    assert set(OPERATIONS) | NOT_YET_OPERATIONS | NOT_OPERATIONS == set(PERMISSIONS)
    assert len(CASES) == sum(2 if "." not in c else 1 for line in EXPECTED_TABLE.strip()
                             .splitlines()[1:] for c in line.split()[1:])


def _principal(roles: set[Role], tenant: str | None) -> Principal:
    return Principal("id", "p", frozenset(roles), tenant, "k", 0.0, None)


@pytest.mark.parametrize("action", sorted(NOT_YET_OPERATIONS))
@pytest.mark.parametrize(("role", "tenant"), [(r, t) for r in Role for t in (SAME, None)])
def test_rules_of_operations_added_later(action: str, role: Role, tenant: str | None) -> None:
    # Key operations span every tenant (asked with tenant=None): only an all-tenant admin.
    # Import is an enroller's job on a tenant. Saving the configuration is an all-tenant admin's.
    spans_all = action.startswith(("keys.", "config."))
    asked = None if spans_all else SAME
    allowed = authorize(_principal({role}, tenant), action, asked).allowed
    if spans_all:
        assert allowed == (role is Role.ADMIN and tenant is None)
    else:
        assert allowed == (role is Role.ENROLLER)


@pytest.mark.parametrize(("role", "tenant"), [(r, t) for r in Role for t in (SAME, None)])
def test_only_calibrators_see_exact_distances(role: Role, tenant: str | None) -> None:
    # A permission, not an operation: verify/identify ask it to decide what an answer reveals.
    for asked in (SAME, OTHER):
        allowed = authorize(_principal({role}, tenant), "distances.exact", asked).allowed
        assert allowed == (role is Role.CALIBRATOR and (tenant is None or asked == tenant))


def test_several_roles_grant_the_union_and_nothing_more(world: World) -> None:
    key = world.admin.add_principal("enrol-and-verify", ["enroller", "verifier"],
                                    tenant=SAME).api_key
    view = world.vault.as_key(key)
    subject = world.uid("both")
    view.enroll(subject, [world.probe], tenant=SAME)
    assert view.verify(subject, world.probe, tenant=SAME).match
    with pytest.raises(AccessDenied):
        view.identify(world.probe, tenant=SAME)
    with pytest.raises(AccessDenied):
        view.verify("alice", world.probe, tenant=OTHER)
    events = world.observer.audit_tail(4)
    assert [(e["action"], e["role"], e["outcome"]) for e in events] == [
        ("enroll", "enroller", "ok"), ("verify", "verifier", "ok"),
        ("identify", "enroller,verifier", "denied"), ("verify", "verifier", "denied")]


def test_other_tenants_subjects_and_matches_stay_invisible(world: World) -> None:
    """A t1 identifier searching t1 never sees t2's subjects, even with the same face there."""
    t2_only = world.uid("only-in-t2")
    world.vault.enroll(t2_only, [world.probe], tenant=OTHER)
    found = world.views["identifier@t1"].identify(world.probe, tenant=SAME, top_k=100)
    assert t2_only not in {c.subject_id for c in found.candidates}
    assert {c.subject_id for c in found.candidates} <= {
        s.subject_id for s in world.vault.subjects(tenant=SAME)}
    events = world.views["auditor@t1"].audit_tail(10_000)
    assert events
    assert {e["tenant"] for e in events} == {SAME}
