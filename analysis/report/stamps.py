"""The times in a stage stamp (``<results>/stages/<name>.json``, written by ``reproduce/stages.py``): one reading
for REPORT.md's stage table and ``reproduce/stages.py --timeline``. No pandas: the orchestrator imports it."""

from __future__ import annotations

from datetime import datetime

STAMP_TIME = "%Y-%m-%dT%H:%M:%S%z"  # how reproduce/stages.py writes ``started`` and ``finished``


def stamp_epoch(text: str) -> float:
    """Seconds since the epoch of a stamp's ``started``/``finished`` time (``2026-12-02T17:56:24+0000``)."""
    return datetime.strptime(text, STAMP_TIME).timestamp()


def stage_span(record: dict) -> tuple[float, float]:
    """(start, end) of a stage stamp in seconds since the epoch. A stamp written before ``started`` was recorded
    starts ``seconds`` before it finished.

    Raises:
        KeyError: the stamp has no ``finished`` (every finished stage's stamp has one).
    """
    end = stamp_epoch(record["finished"])
    start = stamp_epoch(record["started"]) if "started" in record else end - float(record["seconds"])
    return start, end
