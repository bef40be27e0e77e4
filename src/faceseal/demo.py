"""The demo: a temporary vault, two people enrolled, verified, identified, one erased.

Everything it shows goes through the public :class:`~faceseal.vault.Vault` API; the CLI command
``faceseal demo`` only prints the steps.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceseal.samples import SamplePhotos, find_samples
from faceseal.vault import Vault


@dataclass
class DemoReport:
    """What the demo did, step by step, for printing or for JSON."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    vault_dir: str = ""
    keyring_dir: str = ""
    kept: bool = False

    def add(self, step: str, ok: bool, **details: Any) -> None:
        self.steps.append({"step": step, "ok": ok, **details})

    @property
    def ok(self) -> bool:
        return all(step["ok"] for step in self.steps)


def run_demo(
    workdir: Path | None = None,
    *,
    keep: bool = False,
    say: Callable[[str], None] = print,
    samples: SamplePhotos | None = None,
) -> DemoReport:
    """Run the demo in a fresh vault under ``workdir`` (a temporary folder by default)."""
    photos = samples or find_samples(say)
    root = Path(tempfile.mkdtemp(prefix="faceseal-demo-", dir=workdir))
    report = DemoReport(vault_dir=str(root / "vault"), keyring_dir=str(root / "keys"), kept=keep)
    try:
        _steps(root, photos, report, say)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _steps(
    root: Path, photos: SamplePhotos, report: DemoReport, say: Callable[[str], None]
) -> None:
    say(f"Photos from {photos.folder}")
    # Vault and keyring in two sibling folders: the keyring is refused inside the vault folder.
    with Vault.create(root / "vault", keyring_dir=root / "keys") as vault:
        say(f"1. Created a vault in {root / 'vault'} with its keyring apart in {root / 'keys'}")
        a = vault.enroll("person-a", [photos.person_a_enroll])
        b = vault.enroll("person-b", [photos.person_b_enroll])
        report.add("enroll", True, subjects=[a.subject_id, b.subject_id])
        say(f"2. Enrolled person-a from {photos.person_a_enroll.name} and person-b from "
            f"{photos.person_b_enroll.name}; each encoding sealed with AES-256-GCM")

        genuine = vault.verify("person-a", photos.person_a_probe)
        report.add("verify genuine", genuine.match, distance=round(genuine.distance, 4),
                   threshold=genuine.threshold)
        say(f"3. Verify {photos.person_a_probe.name} as person-a: "
            f"{'MATCH' if genuine.match else 'NO MATCH'} (distance {genuine.distance:.3f}, "
            f"threshold {genuine.threshold})")

        impostor = vault.verify("person-b", photos.person_a_probe)
        report.add("verify impostor", not impostor.match, distance=round(impostor.distance, 4),
                   threshold=impostor.threshold)
        say(f"4. Verify {photos.person_a_probe.name} as person-b: "
            f"{'MATCH' if impostor.match else 'NO MATCH'} (distance {impostor.distance:.3f}) "
            "-- the impostor is rejected")

        found = vault.identify(photos.person_a_other, top_k=2)
        best = found.best
        report.add("identify", best is not None and best.subject_id == "person-a",
                   ranking=[(c.subject_id, round(c.distance, 4)) for c in found.candidates])
        say(f"5. Identify {photos.person_a_other.name}: "
            + ", ".join(f"{c.subject_id} {c.distance:.3f}" for c in found.candidates)
            + f" -> {best.subject_id if best else 'nobody'}")

        erased = vault.erase("person-a")
        after = vault.identify(photos.person_a_other, top_k=2)
        report.add("erase", erased.key_material_destroyed and after.best is None,
                   templates_erased=erased.templates_erased)
        say(f"6. Erased person-a: {erased.templates_erased} template(s) deleted and its key "
            f"material destroyed; identify now finds "
            f"{after.best.subject_id if after.best else 'nobody within the threshold'}")
    say("Demo " + ("passed" if report.ok else "FAILED") + ": every step above ran against a real "
        "SQLite vault and the dlib ResNet encoder.")
