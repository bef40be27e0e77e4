"""What answers reveal, who sets it, and what a caller may not change (issue #11).

Disclosure per tenant (band by default, decision on request, exact only for calibrators); the
thresholds the vault owns (stricter only, bounded per model, only genuine matches count as
activity); implausible probes refused and audited as suspicious. Python API here; the CLI and
HTTP front ends in test_answer_fronts.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceseal.cli.output import exit_code_for
from faceseal.errors import (
    AccessDenied,
    ImplausibleProbe,
    IntegrityFailure,
    InvalidInput,
    ThresholdTooLoose,
)
from faceseal.http.problems import status_for
from faceseal.matching.models import DLIB_RESNET_V1
from faceseal.matching.plausibility import DLIB_BOUNDS, check_probe
from faceseal.vault import Vault

from .conftest import EncodingOf, vault_keys

SAMPLES = ("obama-1.jpg", "obama-2.jpg", "obama-3.jpg", "obama-small.jpg", "biden-1.jpg",
           "biden-2.jpg", "rgba-32bit.png")


def _views(vault: Vault) -> dict[str, Vault]:
    admin = vault.as_key(vault_keys(vault.home).admin)
    made = {"admin": admin}
    for name, roles in (("door", ["verifier"]), ("search", ["identifier"]),
                        ("tuner", ["verifier", "identifier", "calibrator"]),
                        ("watch", ["auditor"])):
        made[name] = vault.as_key(admin.add_principal(name, roles).api_key)
    return made


@pytest.fixture
def views(vault: Vault, encoding_of: EncodingOf) -> dict[str, Vault]:
    vault.enroll("obama", [encoding_of("obama-1.jpg")])
    vault.enroll("biden", [encoding_of("biden-1.jpg")])
    return _views(vault)


def _newest(views: dict[str, Vault], count: int = 1) -> list[dict[str, Any]]:
    return views["watch"].audit_tail(count)


def _last_seen(vault: Vault, subject: str) -> float:
    return {s.subject_id: s.last_seen_at for s in vault.subjects()}[subject]


# --- disclosure --------------------------------------------------------------------------------


def test_by_default_a_verifier_gets_the_decision_and_a_band(views: dict[str, Vault],
                                                           encoding_of: EncodingOf) -> None:
    door = views["door"]
    genuine = door.verify("obama", encoding_of("obama-2.jpg"))
    assert (genuine.match, genuine.distance, genuine.score, genuine.disclosure) == (
        True, None, "strong", "band")
    impostor = door.verify("obama", encoding_of("biden-2.jpg"))
    assert (impostor.match, impostor.distance, impostor.score, impostor.template_id) == (
        False, None, "none", None)
    event = _newest(views)[0]
    assert (event["action"], event["detail"]["disclosure"]) == ("verify", "band")
    assert "distance" not in event["detail"]


def test_by_default_identify_shows_only_the_matches(views: dict[str, Vault],
                                                    encoding_of: EncodingOf) -> None:
    found = views["search"].identify(encoding_of("obama-2.jpg"), top_k=2)
    assert [(c.subject_id, c.distance, c.score) for c in found.candidates] == [
        ("obama", None, "strong")]
    assert found.disclosure == "band"
    event = _newest(views)[0]
    assert (event["detail"]["subjects"], event["detail"]["shown"]) == (["obama", "biden"], 1)
    nobody = views["search"].identify(encoding_of("biden-2.jpg") * -1.0, top_k=2)
    assert nobody.candidates == []
    assert nobody.best is None


def test_a_calibrator_gets_exact_distances_and_the_audit_log_says_so(
        views: dict[str, Vault], encoding_of: EncodingOf) -> None:
    probe = encoding_of("obama-2.jpg")
    exact = views["tuner"].verify("obama", probe)
    assert exact.disclosure == "exact"
    assert exact.distance == pytest.approx(np.linalg.norm(probe - encoding_of("obama-1.jpg")),
                                           abs=1e-12)
    found = views["tuner"].identify(probe, top_k=2)
    assert [c.subject_id for c in found.candidates] == ["obama", "biden"]
    assert all(c.distance is not None for c in found.candidates)
    events = _newest(views, 2)
    assert [(e["principal"], e["detail"]["disclosure"]) for e in events] == [
        ("tuner", "exact"), ("tuner", "exact")]


def test_the_calibrator_role_alone_does_not_verify(vault: Vault, encoding_of: EncodingOf) -> None:
    vault.enroll("obama", [encoding_of("obama-1.jpg")])
    admin = vault.as_key(vault_keys(vault.home).admin)
    only = vault.as_key(admin.add_principal("only-cal", ["calibrator"]).api_key)
    with pytest.raises(AccessDenied):
        only.verify("obama", encoding_of("obama-2.jpg"))


def test_the_decision_policy_hides_the_band_and_is_audited(views: dict[str, Vault],
                                                          encoding_of: EncodingOf) -> None:
    policy = views["admin"].set_tenant_policy("default", disclosure_level="decision")
    assert (policy.disclosure, policy.thresholds) == ("decision", {})
    event = _newest(views)[0]
    assert (event["action"], event["principal"], event["detail"]["disclosure"],
            event["detail"]["previous_disclosure"]) == ("tenants.policy", "admin", "decision",
                                                        "band")
    shown = views["door"].verify("obama", encoding_of("obama-2.jpg"))
    assert (shown.match, shown.distance, shown.score, shown.disclosure) == (
        True, None, None, "decision")
    assert views["tuner"].verify("obama", encoding_of("obama-2.jpg")).distance is not None
    assert views["watch"].tenant_policy("default").disclosure == "decision"


@pytest.mark.parametrize("level", ["exact", "everything", "", None, 3])
def test_exact_is_not_a_tenant_setting(views: dict[str, Vault], level: Any) -> None:
    before = views["watch"].tenant_policy("default")
    if level is None:  # nothing given: nothing changes
        assert views["admin"].set_tenant_policy("default") == before
        return
    with pytest.raises(InvalidInput):
        views["admin"].set_tenant_policy("default", disclosure_level=level)
    assert views["watch"].tenant_policy("default") == before


def test_only_an_admin_sets_the_policy(views: dict[str, Vault]) -> None:
    for who in ("door", "search", "tuner", "watch"):
        with pytest.raises(AccessDenied):
            views[who].set_tenant_policy("default", disclosure_level="decision")
    assert views["watch"].tenant_policy("default").disclosure == "band"


def test_a_policy_edited_in_the_database_is_refused(views: dict[str, Vault],
                                                   encoding_of: EncodingOf) -> None:
    views["admin"].set_tenant_policy("default", thresholds={"dlib-resnet-v1": 0.5})
    with sqlite3.connect(views["admin"].home / "templates.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'tenant_policy:default'",
                   ('{"disclosure": "band", "thresholds": {"dlib-resnet-v1": 5.0}}',))
    with pytest.raises(IntegrityFailure):
        views["door"].verify("obama", encoding_of("obama-2.jpg"))


# --- thresholds --------------------------------------------------------------------------------


def test_a_looser_threshold_is_refused_and_changes_nothing(views: dict[str, Vault],
                                                          encoding_of: EncodingOf) -> None:
    door, search = views["door"], views["search"]
    before = _last_seen(views["admin"].as_key(vault_keys(views["admin"].home).worker), "biden")
    stranger = encoding_of("obama-2.jpg")
    for loose in (0.61, 2.0, 1e6):
        with pytest.raises(ThresholdTooLoose) as refused:
            door.verify("biden", stranger, threshold=loose)
        assert exit_code_for(refused.value) == 2
        assert status_for(refused.value) == 422
        with pytest.raises(ThresholdTooLoose):
            search.identify(stranger, threshold=loose)
        with pytest.raises(ThresholdTooLoose):
            search.identify_many(np.stack([stranger]), threshold=loose)
    event = _newest(views)[0]
    assert (event["outcome"], event["detail"]["error"], event["detail"]["suspicious"]) == (
        "failed", "threshold_too_loose", True)
    worker = views["admin"].as_key(vault_keys(views["admin"].home).worker)
    assert _last_seen(worker, "biden") == before


def test_a_stricter_threshold_is_honoured(views: dict[str, Vault],
                                          encoding_of: EncodingOf) -> None:
    probe = encoding_of("obama-2.jpg")
    exact = views["tuner"].verify("obama", probe)
    assert exact.distance is not None
    assert exact.match
    stricter = views["tuner"].verify("obama", probe, threshold=exact.distance * 0.99)
    assert (stricter.match, stricter.threshold) == (False, exact.distance * 0.99)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(InvalidInput):
            views["door"].verify("obama", probe, threshold=bad)  # type: ignore[arg-type]


def test_configured_thresholds_are_bounded_per_model(views: dict[str, Vault],
                                                     encoding_of: EncodingOf) -> None:
    admin = views["admin"]
    for bad in (0.61, 1e6, 0.0, -0.5, 0.01, float("nan")):
        with pytest.raises(InvalidInput):
            admin.set_tenant_policy("default", thresholds={"dlib-resnet-v1": bad})
    with pytest.raises(InvalidInput):
        admin.set_tenant_policy("default", thresholds={"no-such-model": 0.5})
    assert admin.set_tenant_policy("default", thresholds={"dlib-resnet-v1": 0.3}).thresholds == {
        "dlib-resnet-v1": 0.3}
    probe = encoding_of("obama-2.jpg")
    shown = views["door"].verify("obama", probe)
    assert shown.threshold == 0.3
    assert shown.match is ((views["tuner"].verify("obama", probe).distance or 1.0) <= 0.3)
    with pytest.raises(ThresholdTooLoose):  # the default 0.6 is now looser than configured
        views["door"].verify("obama", probe, threshold=0.6)


def test_only_a_genuine_match_counts_as_activity(vault: Vault, views: dict[str, Vault],
                                                 encoding_of: EncodingOf) -> None:
    seen = _last_seen(vault, "obama")
    views["door"].verify("obama", encoding_of("biden-2.jpg"))  # no match
    views["search"].identify(encoding_of("biden-2.jpg"))  # matches biden only
    assert _last_seen(vault, "obama") == seen
    views["door"].verify("obama", encoding_of("obama-2.jpg"))  # a genuine match
    assert _last_seen(vault, "obama") > seen


def test_model_ceiling_holds_in_the_vault_configuration() -> None:
    from faceseal.vault.config import VaultConfig

    config = VaultConfig("00" * 16, "now", "local:/x", "/x", thresholds={"dlib-resnet-v1": 0.9})
    with pytest.raises(InvalidInput):
        config.models()


# --- plausibility ------------------------------------------------------------------------------


def test_every_real_encoding_is_plausible_with_room_to_spare(encoding_of: EncodingOf) -> None:
    for name in SAMPLES:
        encoding = encoding_of(name)
        check_probe(encoding, DLIB_RESNET_V1)
        check_probe(encoding.astype(np.float32), DLIB_RESNET_V1)
        norm = float(np.linalg.norm(encoding))
        # The documented measurements (docs/threat-model.md) and the margins around them.
        assert 1.3 <= norm <= 1.45
        assert DLIB_BOUNDS.min_norm <= norm * 0.6
        assert norm * 1.4 <= DLIB_BOUNDS.max_norm
        assert np.abs(encoding).max() * 2 <= DLIB_BOUNDS.max_abs + 0.05
        spread = float(np.std(encoding)) / (norm / np.sqrt(128))
        assert spread > 0.99 > DLIB_BOUNDS.min_spread


def _implausible(real: np.ndarray) -> dict[str, np.ndarray]:
    eye = np.eye(128)
    return {
        "origin": np.zeros(128),
        "unit vector 0": eye[0],
        "unit vector 77": eye[77],
        "negative unit vector": -eye[5],
        "scaled unit vector": eye[9] * float(np.linalg.norm(real)),
        "huge norm": real * 10,
        "tiny norm": real * 0.01,
        "constant": np.full(128, 0.12),
        "negative constant": np.full(128, -0.12),
        "two spikes": (eye[3] + eye[4]) * 0.9,
    }


def test_implausible_probes_are_refused_audited_and_change_nothing(
        vault: Vault, views: dict[str, Vault], encoding_of: EncodingOf) -> None:
    seen = _last_seen(vault, "obama")
    real = encoding_of("obama-2.jpg")
    calls: list[Callable[[np.ndarray], object]] = [
        lambda p: views["door"].verify("obama", p),
        views["search"].identify,
        lambda p: views["search"].identify_many(np.stack([real, p])),
        lambda p: views["tuner"].verify("obama", p),  # exact disclosure does not lift it
    ]
    for name, probe in _implausible(real).items():
        for call in calls:
            with pytest.raises(ImplausibleProbe) as refused:
                call(probe)
            assert (exit_code_for(refused.value), status_for(refused.value)) == (2, 422), name
            assert "plausible" in str(refused.value)
            event = _newest(views)[0]
            assert (event["outcome"], event["detail"]["error"],
                    event["detail"]["suspicious"]) == ("failed", "implausible_probe", True), name
    assert _last_seen(vault, "obama") == seen


def test_a_model_without_bounds_still_refuses_degenerate_probes() -> None:
    from faceseal.matching.models import ModelSpec

    other = ModelSpec("other-512", 512, "cosine", 0.4)
    check_probe(np.random.default_rng(1).standard_normal(512), other)
    for probe in (np.zeros(512), np.ones(512)):
        with pytest.raises(ImplausibleProbe):
            check_probe(probe, other)


def test_the_policy_lives_in_the_store_and_survives_reopening(tmp_path: Path,
                                                              encoding_of: EncodingOf) -> None:
    from .conftest import make_vault, reopen_vault

    with make_vault(tmp_path / "v", tmp_path / "k") as vault:
        vault.set_tenant_policy("acme", disclosure_level="decision",
                                thresholds={"dlib-resnet-v1": 0.45})
    with reopen_vault(tmp_path / "v") as again:
        policy = again.tenant_policy("acme")
        assert (policy.disclosure, policy.thresholds) == ("decision", {"dlib-resnet-v1": 0.45})
        assert again.tenant_policy("other").disclosure == "band"
