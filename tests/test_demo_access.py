"""The demo runs each step as a principal holding only the role it needs."""

from __future__ import annotations

from pathlib import Path

from faceseal.demo import run_demo
from faceseal.samples import SamplePhotos


def test_the_demo_uses_one_principal_per_role_and_ends_with_an_intact_audit_trail(
        faces_dir: Path, tmp_path: Path) -> None:
    photos = SamplePhotos(faces_dir, faces_dir / "obama-1.jpg", faces_dir / "obama-2.jpg",
                          faces_dir / "obama-3.jpg", faces_dir / "biden-1.jpg")
    lines: list[str] = []
    report = run_demo(tmp_path, samples=photos, say=lines.append)
    assert report.ok, report.steps
    assert [(s["step"], s["by"]) for s in report.steps] == [
        ("enroll", "enrol-desk"), ("verify genuine", "door"), ("verify impostor", "door"),
        ("identify", "search"), ("erase", "enrol-desk")]
    checks = {check["check"]: check for check in report.access}
    assert checks["principals"]["principals"] == ["auditor", "door", "enrol-desk", "search"]
    assert checks["1:N refused to a verifier"]["ok"]
    assert checks["audit trail verified"]["ok"]
    assert checks["audit trail verified"]["events"] >= 12
    assert not any("fsk_" in line for line in lines)  # no API key is printed
    assert not list(tmp_path.iterdir())  # the temporary vault is gone
