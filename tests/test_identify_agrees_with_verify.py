"""identify's distances and decisions are verify's, bit for bit (issue #11, item 5).

The gallery serves 1:N from int8 codes; identify re-ranks every candidate its bound cannot
exclude from the subjects' records in float64 with verify's own function. Probes placed within
1e-6 of the threshold are where the two would disagree if identify reported the gallery's
numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceseal.vault import Vault

from .answer_support import plausible_encodings, set_budgets
from .conftest import EncodingOf, make_vault, reopen_vault

SUBJECTS = 40
PROBES = 10_000
THRESHOLD = 0.6


@pytest.fixture
def real(encoding_of: EncodingOf) -> np.ndarray:
    return np.stack([encoding_of(name) for name in
                     ("obama-1.jpg", "obama-2.jpg", "biden-1.jpg", "biden-2.jpg")])


@pytest.mark.slow
def test_ten_thousand_probes_at_the_threshold_get_the_same_answer(tmp_path: Path,
                                                                   real: np.ndarray) -> None:
    home = tmp_path / "vault"
    make_vault(home, tmp_path / "keys").close()
    set_budgets(home, per_principal=10 * PROBES, per_subject=10 * PROBES)
    rng = np.random.default_rng(11)
    enrolled = plausible_encodings(real, SUBJECTS, seed=3)
    # float32 templates too: verify and identify must also agree on the widened values.
    with reopen_vault(home) as vault:
        names = [f"s{i:02d}" for i in range(SUBJECTS)]
        for i, name in enumerate(names):
            vault.enroll(name, [enrolled[i].astype(np.float32) if i % 2 else enrolled[i]])
        owners = rng.integers(0, SUBJECTS, PROBES)
        directions = rng.standard_normal((PROBES, 128))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        offsets = THRESHOLD + rng.uniform(-1e-6, 1e-6, PROBES)
        stored = np.stack([enrolled[i].astype(np.float32).astype(np.float64) if i % 2
                           else enrolled[i] for i in range(SUBJECTS)])
        probes = stored[owners] + offsets[:, None] * directions

        found = vault.identify_many(probes, top_k=SUBJECTS)
        decisions = {True: 0, False: 0}
        for probe, owner, result in zip(probes, owners, found, strict=True):
            assert result.disclosure == "exact"
            by_subject = {c.subject_id: c for c in result.candidates}
            candidate = by_subject[names[owner]]
            checked = vault.verify(names[owner], probe)
            assert checked.distance is not None
            assert candidate.distance is not None
            assert abs(checked.distance - THRESHOLD) <= 1.1e-6  # the probe is on the edge
            assert candidate.distance == checked.distance
            assert candidate.match == checked.match
            assert candidate.template_id == checked.template_id
            decisions[checked.match] += 1
        # Both sides of the threshold were exercised.
        assert decisions[True] > PROBES // 4
        assert decisions[False] > PROBES // 4


def test_the_same_photo_gives_the_same_number(vault: Vault, encoding_of: EncodingOf) -> None:
    photo = encoding_of("obama-1.jpg")
    vault.enroll("obama", [photo])
    vault.enroll("biden", [encoding_of("biden-1.jpg")])
    verified = vault.verify("obama", photo)
    identified = vault.identify(photo, top_k=2)
    assert verified.distance == identified.candidates[0].distance == 0.0
    other = encoding_of("obama-2.jpg")
    assert vault.verify("obama", other).distance == vault.identify(other).candidates[0].distance
    assert vault.verify("biden", other).distance == {
        c.subject_id: c.distance for c in vault.identify(other, top_k=2).candidates}["biden"]


def test_a_subject_erased_behind_the_gallery_drops_out(tmp_path: Path,
                                                       encoding_of: EncodingOf) -> None:
    # The final distances come from the records: a subject another process erased after this
    # one loaded its gallery is not reported (its records are gone).
    first = make_vault(tmp_path / "vault", tmp_path / "keys")
    probe = encoding_of("obama-1.jpg")
    first.enroll("obama", [probe])
    first.enroll("biden", [encoding_of("biden-1.jpg")])
    assert {c.subject_id for c in first.identify(probe, top_k=2).candidates} == {"obama",
                                                                                 "biden"}
    with reopen_vault(tmp_path / "vault") as second:
        second.erase("obama")
    assert [c.subject_id for c in first.identify(probe, top_k=2).candidates] == ["biden"]
    first.close()
