"""The answer rules through the CLI and the HTTP API (issue #11): tenant policy commands and
endpoints, a looser threshold refused (exit 2 / 422) changing nothing, implausible probes refused
(exit 2 / 422) and audited, budgets over HTTP (429)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceseal.client import ApiError, FacesealClient
from faceseal.errors import BudgetExceeded, ImplausibleProbe, ThresholdTooLoose

from .conftest import CliVault, EncodingOf
from .http_server import Served, served_vault

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _json(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _subjects(cli_vault: CliVault) -> dict[str, float]:
    listed = _json(cli_vault.invoke("subjects", "--json"))
    return {s["subject_id"]: s["last_seen_at"] for s in listed["subjects"]}


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_policy_threshold_and_plausibility(cli_vault: CliVault, tmp_path: Path,
                                               encoding_of: EncodingOf) -> None:
    enrolled = tmp_path / "obama.npy"
    np.save(enrolled, encoding_of("obama-1.jpg"))
    assert cli_vault.invoke("enroll", "--subject", "obama", str(enrolled)).returncode == 0
    probe, stranger, origin = tmp_path / "p.npy", tmp_path / "s.npy", tmp_path / "zero.npy"
    np.save(probe, encoding_of("obama-2.jpg"))
    np.save(stranger, encoding_of("biden-1.jpg"))
    np.save(origin, np.zeros(128))

    shown = _json(cli_vault.invoke("tenants", "policy", "default", "--json"))
    assert shown == {"tenant": "default", "disclosure": "band", "thresholds": {}}
    before = _subjects(cli_vault)
    loose = cli_vault.invoke("verify", "--subject", "obama", str(stranger), "--threshold", "1.5",
                             "--json")
    assert loose.returncode == 2
    assert _json(loose)["error"]["code"] == "threshold_too_loose"
    assert cli_vault.invoke("identify", str(stranger), "--threshold", "0.61").returncode == 2
    zero = cli_vault.invoke("verify", "--subject", "obama", str(origin), "--json")
    assert zero.returncode == 2
    assert _json(zero)["error"]["code"] == "implausible_probe"
    assert _subjects(cli_vault) == before
    tail = _json(cli_vault.invoke("audit", "tail", "-n", "4", "--json"))
    suspicious = [e for e in tail["events"] if e["detail"].get("suspicious")]
    assert [e["detail"]["error"] for e in suspicious] == [
        "threshold_too_loose", "threshold_too_loose", "implausible_probe"]

    changed = cli_vault.invoke("tenants", "policy", "default", "--disclosure", "decision",
                               "--threshold", "dlib-resnet-v1=0.5", "--json")
    assert _json(changed) == {"tenant": "default", "disclosure": "decision",
                              "thresholds": {"dlib-resnet-v1": 0.5}}
    for bad in (["--threshold", "dlib-resnet-v1=0.9"], ["--threshold", "oops"],
                ["--disclosure", "exact"]):
        assert cli_vault.invoke("tenants", "policy", "default", *bad).returncode == 2
    # The test principal holds the calibrator role: it sees the distance and the new threshold.
    verified = _json(cli_vault.invoke("verify", "--subject", "obama", str(probe), "--json"))
    assert (verified["threshold"], verified["disclosure"]) == (0.5, "exact")
    assert verified["distance"] is not None
    human = cli_vault.invoke("verify", "--subject", "obama", str(probe))
    assert "distance 0." in human.stdout


# --- HTTP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_vault(tmp_path_factory.mktemp("answers")) as server:
        yield server


@pytest.fixture(scope="module")
def clients(served: Served) -> Iterator[dict[str, FacesealClient]]:
    made = {who: served.client(who) for who in
            ("worker", "admin-acme", "verifier", "identifier", "auditor", "calibrator")}
    yield made
    for client in made.values():
        client.close()


def test_http_policy_and_refusals(served: Served, clients: dict[str, FacesealClient],
                                  encoding_of: EncodingOf) -> None:
    worker, admin = clients["worker"], clients["admin-acme"]
    worker.enroll("obama", encoding_of("obama-1.jpg")[None, :], tenant="acme")
    worker.enroll("biden", encoding_of("biden-1.jpg")[None, :], tenant="acme")
    assert clients["auditor"].tenant_policy("acme").disclosure == "band"

    before = {s.subject_id: s.last_seen_at for s in worker.subjects(tenant="acme")}
    with pytest.raises(ThresholdTooLoose) as loose:
        clients["verifier"].verify("biden", encoding_of("obama-2.jpg"), tenant="acme",
                                   threshold=2.0)
    assert isinstance(loose.value, ApiError)
    assert loose.value.status == 422
    with served.http() as http:
        raw = http.post("/v1/tenants/acme/identify",
                        headers={"Authorization": f"Bearer {served.keys['identifier']}"},
                        json={"encoding": [0.0] * 128})
        assert raw.status_code == 422
        assert raw.json()["code"] == "implausible_probe"
        raw = http.put("/v1/tenants/acme/policy",
                       headers={"Authorization": f"Bearer {served.keys['admin-acme']}"},
                       json={"disclosure": "exact"})
        assert raw.status_code == 422
        raw = http.put("/v1/tenants/acme/policy",
                       headers={"Authorization": f"Bearer {served.keys['verifier']}"},
                       json={"disclosure": "decision"})
        assert raw.status_code == 403
    with pytest.raises(ImplausibleProbe):
        clients["verifier"].verify("obama", np.eye(128)[3], tenant="acme")
    assert {s.subject_id: s.last_seen_at for s in worker.subjects(tenant="acme")} == before

    policy = admin.set_tenant_policy("acme", disclosure_level="decision",
                                     thresholds={"dlib-resnet-v1": 0.55})
    assert (policy.disclosure, policy.thresholds) == ("decision", {"dlib-resnet-v1": 0.55})
    shown = clients["verifier"].verify("obama", encoding_of("obama-2.jpg"), tenant="acme")
    assert (shown.match, shown.distance, shown.score, shown.threshold) == (True, None, None,
                                                                           0.55)
    exact = clients["calibrator"].identify(encoding_of("obama-2.jpg"), tenant="acme", top_k=2)
    assert exact.disclosure == "exact"
    assert len(exact.candidates) == 2
    events = clients["auditor"].audit_tail(20, tenant="acme")
    assert any(e["action"] == "tenants.policy" and e["detail"].get("disclosure") == "decision"
               for e in events)
    assert any(e["detail"].get("error") == "implausible_probe" and e["detail"]["suspicious"]
               for e in events)


def test_http_budget_is_429(clients: dict[str, FacesealClient],
                            encoding_of: EncodingOf) -> None:
    worker = clients["worker"]
    worker.enroll("budgeted", encoding_of("obama-3.jpg")[None, :], tenant="acme")
    probe = encoding_of("obama-2.jpg")
    for _ in range(60):  # the default per-subject budget
        assert clients["verifier"].verify("budgeted", probe, tenant="acme").match
    with pytest.raises(BudgetExceeded) as refused:
        clients["verifier"].verify("budgeted", probe, tenant="acme")
    assert isinstance(refused.value, ApiError)
    assert refused.value.status == 429


def test_cli_budgets_hold_across_invocations(cli_vault: CliVault, tmp_path: Path,
                                             encoding_of: EncodingOf) -> None:
    # Every command is a new vault object: counted in memory, each would start afresh.
    from .answer_support import set_budgets

    enrolled, probe = tmp_path / "e.npy", tmp_path / "p.npy"
    np.save(enrolled, encoding_of("obama-1.jpg"))
    np.save(probe, encoding_of("obama-2.jpg"))
    assert cli_vault.invoke("enroll", "--subject", "obama", str(enrolled)).returncode == 0
    set_budgets(cli_vault.home, per_subject=3)
    for _ in range(3):
        assert cli_vault.invoke("verify", "--subject", "obama", str(probe)).returncode == 0
    refused = cli_vault.invoke("verify", "--subject", "obama", str(probe), "--json")
    assert refused.returncode == 3
    assert _json(refused)["error"]["code"] == "budget_exceeded"
