"""The demo: a temporary vault, two people enrolled, verified, identified, one erased.

Each step is done by a principal holding only the role it needs (created by the first admin), a
refused request shows the access control at work, and an auditor verifies the audit trail at the
end. Everything it shows goes through the public :class:`~faceseal.vault.Vault` API; the CLI
command ``faceseal demo`` only prints the steps.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceseal.errors import AccessDenied
from faceseal.samples import SamplePhotos, find_samples
from faceseal.vault import Vault


@dataclass
class DemoReport:
    """What the demo did, step by step, for printing or for JSON."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    #: Checks of the access control and the audit trail around the steps.
    access: list[dict[str, Any]] = field(default_factory=list)
    vault_dir: str = ""
    keyring_dir: str = ""
    kept: bool = False

    def add(self, step: str, ok: bool, **details: Any) -> None:
        self.steps.append({"step": step, "ok": ok, **details})

    def check(self, check: str, ok: bool, **details: Any) -> None:
        self.access.append({"check": check, "ok": ok, **details})

    @property
    def ok(self) -> bool:
        return all(item["ok"] for item in [*self.steps, *self.access])


def run_demo(
    workdir: Path | None = None,
    *,
    keep: bool = False,
    say: Callable[[str], None] = print,
    samples: SamplePhotos | None = None,
) -> DemoReport:
    """Run the demo in a fresh vault under ``workdir`` (a temporary folder by default)."""
    photos = samples or find_samples()
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
    say(f"Photos from {photos.folder}" + (f" ({photos.origin})" if photos.origin else ""))
    # Vault and keyring in two sibling folders: the keyring is refused inside the vault folder.
    with Vault.create(root / "vault", keyring_dir=root / "keys") as admin:
        say(f"1. Created a vault in {root / 'vault'} with its keyring apart in {root / 'keys'}, "
            "and its first admin (`faceseal init` shows that API key once; only a hash is kept)")
        keys = {
            name: admin.add_principal(name, [role], tenant=tenant).api_key
            for name, role, tenant in (("enrol-desk", "enroller", "default"),
                                       ("door", "verifier", "default"),
                                       ("search", "identifier", "default"),
                                       ("auditor", "auditor", None))
        }
        report.check("principals", True, principals=sorted(keys))
        say("2. The admin added one principal per role: enrol-desk (enroller), door (verifier), "
            "search (identifier), auditor (auditor)")
        enroller, door = admin.as_key(keys["enrol-desk"]), admin.as_key(keys["door"])
        search, auditor = admin.as_key(keys["search"]), admin.as_key(keys["auditor"])

        a = enroller.enroll("person-a", [photos.person_a_enroll])
        b = enroller.enroll("person-b", [photos.person_b_enroll])
        report.add("enroll", True, by="enrol-desk", subjects=[a.subject_id, b.subject_id])
        say(f"3. enrol-desk enrolled person-a from {photos.person_a_enroll.name} and person-b "
            f"from {photos.person_b_enroll.name}; each encoding sealed with AES-256-GCM")

        genuine = door.verify("person-a", photos.person_a_probe)
        report.add("verify genuine", genuine.match, by="door",
                   score=genuine.score, threshold=genuine.threshold)
        say(f"4. door verified {photos.person_a_probe.name} as person-a: "
            f"{'MATCH' if genuine.match else 'NO MATCH'} (score {genuine.score}, "
            f"threshold {genuine.threshold}; exact distances need the calibrator role)")

        impostor = door.verify("person-b", photos.person_a_probe)
        report.add("verify impostor", not impostor.match, by="door",
                   score=impostor.score, threshold=impostor.threshold)
        say(f"5. door verified {photos.person_a_probe.name} as person-b: "
            f"{'MATCH' if impostor.match else 'NO MATCH'} (score {impostor.score}) "
            "-- the impostor is rejected")

        try:
            door.identify(photos.person_a_other)
            refused = False
        except AccessDenied:
            refused = True
        report.check("1:N refused to a verifier", refused)
        say("6. door tried a 1:N search: " + ("refused (a verifier may only verify), and the "
            "refusal audited" if refused else "NOT refused"))

        found = search.identify(photos.person_a_other, top_k=2)
        best = found.best
        report.add("identify", best is not None and best.subject_id == "person-a", by="search",
                   ranking=[(c.subject_id, c.score) for c in found.candidates])
        say(f"7. search identified {photos.person_a_other.name}: "
            + ", ".join(f"{c.subject_id} ({c.score})" for c in found.candidates)
            + f" -> {best.subject_id if best else 'nobody'}")

        erased = enroller.erase("person-a")
        after = search.identify(photos.person_a_other, top_k=2)
        report.add("erase", erased.key_material_destroyed and after.best is None,
                   by="enrol-desk",
                   templates_erased=erased.templates_erased)
        say(f"8. enrol-desk erased person-a: {erased.templates_erased} template(s) deleted and "
            f"its key material destroyed; identify now finds "
            f"{after.best.subject_id if after.best else 'nobody within the threshold'}")

        chain = auditor.audit_verify()
        report.check("audit trail verified", chain.ok, by="auditor", events=chain.events)
        say(f"9. auditor verified the audit trail: {chain.events} events, "
            + ("every MAC and link intact" if chain.ok else f"BROKEN: {chain.problem}"))
    say("Demo " + ("passed" if report.ok else "FAILED") + ": every step above ran against a real "
        "SQLite vault and the dlib ResNet encoder.")
