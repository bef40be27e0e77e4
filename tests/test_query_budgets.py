"""Query budgets per principal and per subject (issue #11, item 4).

The counts live in a :class:`~faceseal.access.counters.WindowCounters` the vault is given; a
manual clock moves the window. Two vault objects given one counter store share the budget, as
replicas sharing a store-backed or Redis-backed implementation do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from faceseal.access.counters import MemoryCounters, RedisCounters
from faceseal.cli.output import exit_code_for
from faceseal.errors import BudgetExceeded, InvalidInput, NotFound
from faceseal.http.problems import status_for
from faceseal.vault import Vault
from faceseal.vault.budgets import BudgetLimits

from .answer_support import set_budgets
from .conftest import EncodingOf, make_vault, vault_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def home(tmp_path: Path, encoding_of: EncodingOf) -> Path:
    with make_vault(tmp_path / "vault", tmp_path / "keys") as vault:
        vault.enroll("obama", [encoding_of("obama-1.jpg")])
        vault.enroll("biden", [encoding_of("biden-1.jpg")])
        admin = vault.as_key(vault_keys(vault.home).admin)
        for name, roles in (("door", ["verifier"]), ("door2", ["verifier"]),
                            ("search", ["identifier"]), ("watch", ["auditor"])):
            KEYS[name] = admin.add_principal(name, roles).api_key
    set_budgets(tmp_path / "vault", per_principal=10, per_subject=6, window=60.0)
    return tmp_path / "vault"


KEYS: dict[str, str] = {}


@pytest.fixture
def vault(home: Path, clock: Clock) -> Iterator[Vault]:
    with Vault.open(home, counters=MemoryCounters(clock=clock)) as opened:
        yield opened


def _last_event(vault: Vault) -> dict[str, object]:
    return vault.as_key(KEYS["watch"]).audit_tail(1)[0]


def test_a_principal_over_its_budget_is_refused_and_audited(
        vault: Vault, clock: Clock, encoding_of: EncodingOf) -> None:
    door = vault.as_key(KEYS["door"])
    probe = encoding_of("obama-2.jpg")
    for number in range(10):
        door.verify("obama" if number % 2 else "biden", probe)
    with pytest.raises(BudgetExceeded) as refused:
        door.verify("obama", probe)
    assert (status_for(refused.value), exit_code_for(refused.value)) == (429, 3)
    event = _last_event(vault)
    assert (event["principal"], event["outcome"]) == ("door", "failed")
    assert event["detail"] == {"error": "budget_exceeded", "suspicious": True}
    # Another principal has its own budget; the window moving on restores this one's.
    vault.as_key(KEYS["door2"]).verify("obama", probe)
    clock.now += 61
    assert door.verify("obama", probe).match


def test_a_subject_over_its_budget_is_refused_whoever_asks(
        vault: Vault, encoding_of: EncodingOf) -> None:
    probe = encoding_of("obama-2.jpg")
    door, door2 = vault.as_key(KEYS["door"]), vault.as_key(KEYS["door2"])
    for number in range(6):
        (door if number % 2 else door2).verify("obama", probe)
    with pytest.raises(BudgetExceeded):
        door.verify("obama", probe)
    with pytest.raises(BudgetExceeded):
        door2.verify("obama", probe)
    door.verify("biden", probe)  # another subject is not held up


def test_batch_identify_counts_every_probe(vault: Vault, clock: Clock,
                                           encoding_of: EncodingOf) -> None:
    search = vault.as_key(KEYS["search"])
    stranger = encoding_of("biden-2.jpg") * -1.0  # matches nobody: charges no subject
    assert all(r.candidates == [] for r in search.identify_many(np.stack([stranger] * 8)))
    with pytest.raises(BudgetExceeded):
        search.identify_many(np.stack([stranger] * 3))  # 8 + 3 > 10: refused as a whole
    search.identify_many(np.stack([stranger] * 2))
    with pytest.raises(BudgetExceeded):
        search.identify(stranger)
    clock.now += 61
    assert search.identify(stranger).candidates == []


def test_identify_charges_the_subjects_it_reveals(vault: Vault,
                                                  encoding_of: EncodingOf) -> None:
    search = vault.as_key(KEYS["search"])
    probe = encoding_of("obama-2.jpg")
    found = search.identify_many(np.stack([probe] * 6))
    assert all(r.best is not None and r.best.subject_id == "obama" for r in found)
    with pytest.raises(BudgetExceeded):
        vault.as_key(KEYS["door"]).verify("obama", probe)


def test_two_vault_objects_sharing_counters_share_the_budget(
        home: Path, clock: Clock, encoding_of: EncodingOf) -> None:
    shared = MemoryCounters(clock=clock)
    probe = encoding_of("obama-2.jpg")
    with Vault.open(home, api_key=KEYS["door"], counters=shared) as one, \
            Vault.open(home, api_key=KEYS["door"], counters=shared) as two:
        for number in range(10):  # five each: within the per-subject budget of six
            (one if number % 2 else two).verify("biden" if number < 5 else "obama", probe)
        with pytest.raises(BudgetExceeded):
            one.verify("obama", probe)
        with pytest.raises(BudgetExceeded):
            two.verify("biden", probe)


def test_default_budgets_and_their_checks() -> None:
    limits = BudgetLimits()
    assert (limits.window_seconds, limits.per_principal, limits.per_subject) == (3600.0, 2000,
                                                                               60)
    # Below the 129 exact answers that rebuild one encoding (threat-model.md).
    assert limits.per_subject < 129
    for bad in ({"window_seconds": 0}, {"window_seconds": float("inf")}, {"per_principal": 0},
                {"per_subject": -1}, {"per_subject": 1.5}, {"per_principal": True}):
        with pytest.raises(InvalidInput):
            BudgetLimits(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["store", "redis"])
def test_replicas_sharing_store_or_redis_counters_share_the_budget(
        home: Path, where: str, encoding_of: EncodingOf) -> None:
    # What `faceseal serve --rate-limits store|redis://...` gives every replica.
    prefix = f"faceseal-test:{os.urandom(6).hex()}:"
    redis_url = os.environ.get("FACESEAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    probe = encoding_of("obama-2.jpg")
    made: list[RedisCounters] = []
    with Vault.open(home) as one, Vault.open(home) as two:
        for vault in (one, two):
            if where == "store":
                vault.use_query_counters(vault.shared_counters())
            else:
                made.append(RedisCounters(redis_url, prefix=prefix))
                vault.use_query_counters(made[-1])
        door1, door2 = one.as_key(KEYS["door"]), two.as_key(KEYS["door"])
        for number in range(6):  # the per-subject budget of six, split between two replicas
            (door1 if number % 2 else door2).verify("obama", probe)
        with pytest.raises(BudgetExceeded):
            door1.verify("obama", probe)
        with pytest.raises(BudgetExceeded):
            door2.verify("obama", probe)
    for counters in made:
        counters.close()


@pytest.fixture
def shared(home: Path) -> Iterator[Vault]:
    """Budgets counted in the store, as a service and the CLI count them."""
    with Vault.open(home) as opened:
        opened.use_query_counters(opened.shared_counters())
        yield opened


def test_each_call_is_one_durable_commit_and_a_failed_call_costs_its_query(
        shared: Vault, encoding_of: EncodingOf) -> None:
    door = shared.as_key(KEYS["door"])
    probe = encoding_of("obama-2.jpg")
    group = shared._store._group  # type: ignore[attr-defined]
    before = group.commits
    assert door.verify("obama", probe).match
    assert group.commits - before == 1  # the charge, the subject's, the event: one commit
    before = group.commits
    with pytest.raises(NotFound):
        door.verify("nobody", probe)
    assert group.commits - before == 1  # the charge and the failed event
    assert _last_event(shared)["detail"] == {"error": "not_found"}
    for number in range(8):  # 2 spent; 8 more, half of them failures, fill the budget of 10
        if number % 2:
            door.verify("biden", probe)
        else:
            with pytest.raises(NotFound):
                door.verify("nobody", probe)
    with pytest.raises(BudgetExceeded):  # refused before any matching, counting nothing
        door.verify("obama", probe)
    with pytest.raises(BudgetExceeded):  # a not-found is no cheaper way in
        door.verify("nobody", probe)


def _spend_the_rest_meanwhile(monkeypatch: pytest.MonkeyPatch, vault: Vault) -> None:
    """Another replica spends door's whole budget while a call of door's is matching."""
    original = Vault._verify_from_store

    def racing(self: Vault, *args: object) -> object:
        with contextlib.suppress(BudgetExceeded):  # (all of it: nothing is spent before)
            vault._answers.budgets.charge_principal("door", 10)  # type: ignore[attr-defined]
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Vault, "_verify_from_store", racing)


def _assert_refused_for_budget(vault: Vault, call: Callable[[], object]) -> None:
    """``call`` raises BudgetExceeded, and door's last event says so, marked suspicious."""
    with pytest.raises(BudgetExceeded):
        call()
    event = _last_event(vault)
    assert (event["principal"], event["outcome"]) == ("door", "failed")
    assert event["detail"] == {"error": "budget_exceeded", "suspicious": True}


def test_a_budget_spent_while_the_call_matched_withholds_the_answer(
        shared: Vault, encoding_of: EncodingOf, monkeypatch: pytest.MonkeyPatch) -> None:
    door = shared.as_key(KEYS["door"])

    def answers() -> int:
        return len([e for e in shared.as_key(KEYS["watch"]).audit_tail(100)
                    if (e["principal"], e["outcome"]) == ("door", "ok")])

    answered = answers()
    _spend_the_rest_meanwhile(monkeypatch, shared)
    _assert_refused_for_budget(shared, lambda: door.verify("obama", encoding_of("obama-2.jpg")))
    assert answers() == answered  # no answer recorded


def test_a_failure_the_call_cannot_pay_for_is_not_shown(
        shared: Vault, encoding_of: EncodingOf, monkeypatch: pytest.MonkeyPatch) -> None:
    """"No such subject" is information: a caller whose budget ran out meanwhile gets 429, not
    the 404 it did not pay for."""
    door = shared.as_key(KEYS["door"])
    _spend_the_rest_meanwhile(monkeypatch, shared)
    _assert_refused_for_budget(shared, lambda: door.verify("nobody", encoding_of("obama-2.jpg")))
