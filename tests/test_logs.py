"""FACESEAL_LOG_FORMAT=json: one JSON object per log line, with reviewed fields only, from the
command line and from the service's access log."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import httpx

from faceseal.cli.logs import FIELDS, JsonLogFormatter

from .conftest import CliVault, run_cli
from .http_server import served_vault


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("faceseal.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_line_with_reviewed_fields_only() -> None:
    line = JsonLogFormatter().format(_record(
        "subject %s\nFORGED {\"level\": \"INFO\"}", "x\x1b[2J", route="/v1/healthz", status=200,
        api_key="fsk_should_never_show", encoding=[0.1, 0.2]))
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == 'subject x\x1b[2J\nFORGED {"level": "INFO"}'
    assert (document["level"], document["logger"]) == ("WARNING", "faceseal.test")
    assert document["time"].endswith("Z")
    assert document["route"] == "/v1/healthz"
    assert document["status"] == 200
    assert set(document) <= {"time", "level", "logger", "message", "exception", *FIELDS}


def test_a_traceback_stays_inside_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_cli_logs_json(tmp_path: Path) -> None:
    done = run_cli("-v", "init", "--write-key", str(tmp_path / "admin.key"), env={
        "FACESEAL_HOME": str(tmp_path / "v"), "FACESEAL_KEYRING_DIR": str(tmp_path / "k"),
        "FACESEAL_LOG_FORMAT": "json"})
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(d["message"].startswith("created vault") and d["level"] == "INFO"
               for d in documents)


def test_an_unknown_format_is_a_usage_error(cli_vault: CliVault) -> None:
    done = run_cli("subjects", env={**cli_vault.env, "FACESEAL_LOG_FORMAT": "xml"})
    assert done.returncode == 2
    assert "FACESEAL_LOG_FORMAT must be one of text, json" in done.stderr


def test_the_access_log_in_json(tmp_path: Path) -> None:
    with served_vault(tmp_path, "-v", env={"FACESEAL_LOG_FORMAT": "json"}) as served:
        key = served.keys["verifier"]
        httpx.get(served.url + "/v1/tenants/acme/subjects",
                  headers={"Authorization": f"Bearer {key}"}, timeout=30)
        log = served.log()
    access = [json.loads(line) for line in log.splitlines()
              if line.startswith("{") and '"faceseal.http.access"' in line]
    listed = [a for a in access if a["route"] == "/v1/tenants/{tenant}/subjects"]
    assert listed
    assert listed[0]["method"] == "GET"
    assert isinstance(listed[0]["status"], int)
    assert isinstance(listed[0]["duration_ms"], float)
    assert listed[0]["request_id"]
    assert key not in log
    assert key.split("_")[1] not in log  # not even the key id
