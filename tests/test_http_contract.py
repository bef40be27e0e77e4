"""The OpenAPI contract, checked by schemathesis against a real ``faceseal serve``.

Every check schemathesis has (``--checks all``: no server errors, status codes, content types,
response headers and bodies conform to the document, schema-invalid input rejected, schema-valid
input accepted, authentication not ignored, methods not documented refused with a correct
``Allow``, erased resources gone, ...) over every operation, at least 100 generated cases each,
in all its phases (examples, coverage, fuzzing, stateful through the document's links).

The only adjustments are in ``tests/schemathesis.toml``: for the three photo uploads, whose
"binary" field no schema can require to hold a face, 422 and 413 also count as accepting
schema-valid input; for the three encoding probes, which no schema can require to be plausible
for their model (or within the tenant's configured threshold), and for setting a tenant's policy
(the models and their bounds are the vault's configuration), 422 does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import PROJECT_ROOT
from .http_server import Served, served_vault

MAX_EXAMPLES = 100
#: CI runs one fixed seed, so a red run can be replayed exactly. Set FACESEAL_SCHEMATHESIS_SEED
#: to explore others. Why fixed: with some seeds schemathesis reports a path parameter "longer
#: than maxLength" as accepted while the request it actually sent (its own curl line) held a
#: valid 255-character value; see docs/http.md.
DEFAULT_SEED = "20261126"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # schemathesis checks that requests without a key are refused: many 401s from one client.
    with served_vault(tmp_path_factory.mktemp("http-contract"),
                      "--auth-failures-per-client", "1000000") as server:
        yield server


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
        fuzzed: Served, tmp_path: Path) -> None:
    operations = sum(len(methods) for methods in
                     httpx.get(f"{fuzzed.url}/openapi.json").json()["paths"].values())
    junit = tmp_path / "schemathesis.xml"
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "--config-file", str(PROJECT_ROOT / "tests" / "schemathesis.toml"), "run",
        f"{fuzzed.url}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
        "--header", f"Authorization: Bearer {fuzzed.keys['worker']}",
        "--report", "junit", "--report-junit-path", str(junit), "--no-color",
        "--generation-database", "none",
    ]
    command += ["--seed", os.environ.get("FACESEAL_SCHEMATHESIS_SEED", DEFAULT_SEED)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                            cwd=tmp_path)  # its cache goes there, not into the project
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"Tested: {operations}" in output, output[-3000:]
    assert "Server error" not in output
    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= operations
    assert not suite.findall(".//failure"), output[-6000:]
    assert not suite.findall(".//error"), output[-6000:]
    # The server logged no unexpected exception while being fuzzed.
    log = fuzzed.log()
    assert "unexpected" not in log
    assert "Traceback" not in log
