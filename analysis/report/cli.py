"""``vista report``: REPORT.md, training curves and a metrics file for one results folder of the pipeline.

vista report --results results/tiny [--profile tiny]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.report.document import write_report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, required=True, help="a results folder written by run_all.sh")
    parser.add_argument(
        "--profile", default=None, help="profile name for the title (default: from profile.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    path = write_report(args.results, profile=args.profile)
    print(f"wrote {path}")
    return 0
