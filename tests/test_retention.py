"""Retention: per-tenant periods, and purge of subjects with no enrolment or match since."""

from __future__ import annotations

import time

import pytest

from faceseal.errors import InvalidInput, NotFound
from faceseal.vault import Vault
from faceseal.vault.durations import BIPA_MAX_SECONDS, format_duration, parse_duration

from .conftest import EncodingOf, random_encodings

PAUSE = 1.0  # seconds of inactivity the tests create (a purge window of PAUSE / 2 must outlast
#             one identify on a loaded two-core machine: 0.3 s flaked there)


def _subjects(vault: Vault, tenant: str = "default") -> list[str]:
    return [s.subject_id for s in vault.subjects(tenant=tenant)]


@pytest.fixture
def aged(vault: Vault, encoding_of: EncodingOf) -> Vault:
    """obama, biden and one random person enrolled; then idle for PAUSE; then obama verified
    (a match) and biden probed with obama's face (no match)."""
    vault.enroll("obama", [encoding_of("obama-1.jpg")])
    vault.enroll("biden", [encoding_of("biden-1.jpg")])
    vault.enroll("someone", [random_encodings(1)[0]])
    vault.enroll("elsewhere", [random_encodings(1, seed=5)[0]], tenant="other")
    # Encoded and searched once now, not between the verify below and a test's purge: a first
    # dlib run or 1:N scan there (model loading, JIT) outlasts PAUSE / 2 and ages obama, as it
    # did when this file ran alone or in a subset. Tenant "other" holds no match for it.
    assert vault.identify(encoding_of("biden-2.jpg"), tenant="other").best is None
    time.sleep(PAUSE)
    assert vault.verify("obama", encoding_of("obama-2.jpg")).match
    assert not vault.verify("biden", encoding_of("obama-2.jpg")).match
    return vault


def test_a_dry_run_lists_and_erases_nothing(aged: Vault) -> None:
    result = aged.purge(PAUSE / 2, tenant="default", dry_run=True)
    assert result.dry_run
    assert result.tenants[0].subject_ids == ["biden", "someone"]
    assert result.erased == 0
    event = aged.audit_tail(1)[-1]
    assert (event["action"], event["outcome"], event["detail"]["dry_run"],
            event["detail"]["subjects"], event["detail"]["erased"]) == ("purge", "ok", True, 2, 0)
    assert _subjects(aged) == ["biden", "obama", "someone"]


def test_purge_erases_what_a_match_did_not_refresh_each_audited(aged: Vault,
                                                               encoding_of: EncodingOf) -> None:
    result = aged.purge(PAUSE / 2, tenant="default")
    assert result.erased == 2
    assert _subjects(aged) == ["obama"]  # matched after the pause: kept
    with pytest.raises(NotFound):
        aged.verify("biden", encoding_of("biden-2.jpg"))
    assert _subjects(aged, "other") == ["elsewhere"]  # another tenant is left alone
    events = [e for e in aged.audit_tail(6) if e["action"] == "purge"]
    assert [(e["subject_id"], len(e["template_ids"])) for e in events[:2]] == [
        ("biden", 1), ("someone", 1)]
    assert events[-1]["detail"]["erased"] == 2


def test_an_identify_match_refreshes_activity_too(aged: Vault, encoding_of: EncodingOf) -> None:
    assert aged.identify(encoding_of("biden-2.jpg")).best is not None
    result = aged.purge(PAUSE / 2, tenant="default")
    assert result.tenants[0].subject_ids == ["someone"]


def test_without_a_period_each_tenant_uses_its_own_retention(aged: Vault) -> None:
    aged.set_retention("other", PAUSE / 2)
    result = aged.purge()
    by_tenant = {t.tenant: t for t in result.tenants}
    assert by_tenant["default"].inactive_for is None  # no retention set: left alone
    assert by_tenant["other"].subject_ids == ["elsewhere"]
    assert _subjects(aged) == ["biden", "obama", "someone"]
    assert _subjects(aged, "other") == []


def test_retention_is_kept_per_tenant_and_warns_beyond_bipa(vault: Vault) -> None:
    assert vault.set_retention("default", 90 * 86400.0).warning is None
    assert "BIPA" in (vault.set_retention("other", BIPA_MAX_SECONDS + 86400).warning or "")
    assert {t.tenant: t.retention_seconds for t in vault.tenants()} == {
        "default": 90 * 86400.0, "other": BIPA_MAX_SECONDS + 86400}
    vault.set_retention("other", None)
    assert {t.tenant: t.retention_seconds for t in vault.tenants()}["other"] is None


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "90d"])
def test_bad_retention_is_refused_and_changes_nothing(vault: Vault, bad: object) -> None:
    vault.set_retention("default", 86400.0)
    with pytest.raises(InvalidInput):
        vault.set_retention("default", bad)  # type: ignore[arg-type]
    assert vault.tenants()[0].retention_seconds == 86400.0


@pytest.mark.parametrize("bad", [-1, float("nan"), "1d"])
def test_bad_purge_periods_are_refused_and_erase_nothing(aged: Vault, bad: object) -> None:
    with pytest.raises(InvalidInput):
        aged.purge(bad)  # type: ignore[arg-type]
    assert _subjects(aged) == ["biden", "obama", "someone"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45.0), ("30m", 1800.0), ("30min", 1800.0), ("12h", 43200.0), ("90d", 7776000.0),
    ("2w", 1209600.0), ("3y", 94608000.0), ("3600", 3600.0), (" 1.5h ", 5400.0), ("90D", 7776000.0),
])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "90 days", "-1d", "1y6m", "ninety", "1e400"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [45.0, 1800.0, 86400.0, 94608000.0, 1.5])
def test_durations_format_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_purge_by_a_tenant_enroller_stays_in_its_tenant(aged: Vault) -> None:
    local = aged.as_key(aged.add_principal("local-enroller", ["enroller"],
                                           tenant="other").api_key)
    result = local.purge(PAUSE / 2)
    assert [t.tenant for t in result.tenants] == ["other"]
    assert _subjects(aged) == ["biden", "obama", "someone"]
