"""``faceseal bench`` runs end to end at small N and reports every figure with its baseline."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

FIGURES = {"seal", "enrol", "open", "memory", "cold_start", "identify", "identify_batch",
           "bytes_per_template", "recall", "verify"}


@pytest.mark.slow
def test_bench_json_reports_every_figure_beside_a_baseline(tmp_path: object) -> None:
    done = run_cli("bench", "--json", "--n", "2000", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    figures = {f["name"]: f for f in report["figures"]}
    assert set(figures) == FIGURES
    for figure in figures.values():
        assert figure["value"] is not None, figure["name"]
        assert figure["baseline_value"] is not None, figure["name"]
        assert figure["ratio"] is not None, figure["name"]
        assert figure["baseline"], figure["name"]
    recall = figures["recall"]
    assert recall["value"] == 1.0
    assert recall["extra"]["max_distance_error_vs_float32"] <= 1e-5
    assert recall["extra"]["planted_identity_top1"] == 1.0
    assert figures["open"]["extra"]["fast_source"] == "snapshot"
    assert figures["open"]["extra"]["baseline_source"] == "records"
    assert figures["identify"]["extra"]["faiss"]["one_thread_ms"] > 0
    assert figures["identify"]["extra"]["faiss"]["default_threads_ms"] > 0
    assert figures["identify"]["extra"]["first_pass_ms"] > 0
    assert figures["identify"]["extra"]["search_only_ms"] > 0
    assert figures["bytes_per_template"]["value"] <= 160
    assert figures["verify"]["extra"]["audit_events_written"] > 0  # the audit write is measured
    assert report["machine"]["cores"] >= 1
    assert report["n"] == 2000
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]  # temp vault removed


def test_bench_prints_a_table(tmp_path: object) -> None:
    done = run_cli("bench", "--n", "300", "--probes", "20", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in FIGURES:
        assert f"\n{name} " in done.stdout
    assert "baseline" in done.stdout


def test_bench_refuses_a_tiny_gallery() -> None:
    done = run_cli("bench", "--n", "5")
    assert done.returncode == 2
    assert "--n" in done.stderr
