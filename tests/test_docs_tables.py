"""The permission table in docs/access.md is the one the code enforces."""

from __future__ import annotations

from faceseal.access.roles import GLOBAL_ACTIONS, PERMISSIONS, Role

from .conftest import PROJECT_ROOT


def test_the_documented_permission_table_matches_the_code() -> None:
    text = (PROJECT_ROOT / "docs" / "access.md").read_text()
    header = ("| action | admin | enroller | verifier | identifier | auditor | calibrator | "
              "scope |")
    lines = text[text.index(header):].splitlines()[2:]
    documented: dict[str, tuple[frozenset[Role], bool]] = {}
    for line in lines:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        roles = frozenset(r for r, cell in zip(Role, cells[1:7], strict=True) if cell == "yes")
        documented[cells[0].strip("`")] = (roles, cells[7] == "every tenant")
    assert documented == {action: (roles, action in GLOBAL_ACTIONS)
                          for action, roles in PERMISSIONS.items()}
