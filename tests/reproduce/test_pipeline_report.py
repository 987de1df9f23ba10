"""run_all.sh's REPORT.md quotes the wall time of the run that wrote it once that run executed every stage: the
report stage runs before the pipeline records the run, so the pipeline rewrites the report's header afterwards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reproduce"))
import pipeline  # noqa: E402
from stages import Stage  # noqa: E402

THEORY = "t,I_vision_given_prefix,H_token_given_prefix\\n1,0.05,1.8\\n2,0.02,1.9\\n"


def fake_stages(profile: dict, out: Path) -> list[Stage]:
    """A theory stage and the real report-writing code, nothing trained."""
    csv = out / "theory" / "profile.csv"
    theory = (
        f"import pathlib; p = pathlib.Path(r'{csv}'); p.parent.mkdir(parents=True); p.write_text('{THEORY}')"
    )
    report = f"from analysis.report.document import write_report; write_report(r'{out}', 'fake')"
    return [
        Stage("theory", "fake theory", [[sys.executable, "-c", theory]], [csv]),
        Stage("report", "REPORT.md", [[sys.executable, "-c", report]], [out / "REPORT.md"], needs=["theory"]),
    ]


def run_all(monkeypatch, out: Path, *flags: str) -> tuple[str, dict, dict]:
    monkeypatch.setattr(pipeline, "load_profile", lambda name, quick, seeds: {"profile": "fake", "jobs": 1})
    monkeypatch.setattr(pipeline, "build_stages", fake_stages)
    assert pipeline.main(["--out", str(out), *flags]) == 0
    record = json.loads((out / "pipeline_runs.jsonl").read_text().splitlines()[-1])
    return (out / "REPORT.md").read_text(), json.loads((out / "report_metrics.json").read_text()), record


def test_a_complete_runs_report_quotes_its_own_wall_time(tmp_path, monkeypatch):
    out = tmp_path / "results"
    report, metrics, record = run_all(monkeypatch, out)
    assert record["ran"] == ["theory", "report"] and not record["skipped"]
    assert "no complete run recorded" not in report
    assert f"- Wall time: {record['wall_seconds'] / 60:.1f} min for the complete run of 2 stages" in report
    assert metrics["pipeline_wall_seconds"] == record["wall_seconds"]
    assert set(metrics["stage_seconds"]) == {"theory", "report"} and "theory" in metrics  # sections kept
    assert report.count("# VISTA study: profile `fake`") == 1 and "## Theory" in report


def test_a_run_that_skipped_stages_quotes_no_wall_time(tmp_path, monkeypatch):
    out = tmp_path / "results"
    run_all(monkeypatch, out)
    (out / "pipeline_runs.jsonl").unlink()  # as if theory had been finished by an earlier partial run
    report, metrics, record = run_all(monkeypatch, out, "--force", "report")
    assert record["ran"] == ["report"] and record["skipped"] == ["theory"]
    assert "(no complete run recorded)" in report and "Wall time" not in report
    assert "pipeline_wall_seconds" not in metrics
