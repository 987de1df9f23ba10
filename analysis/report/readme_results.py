"""The README's ablation results, generated from an ablation run's numbers (issue 17: no hand-copied figures).

    python -m analysis.report.readme_results --results results/tiny-ablation [--readme README.md] [--check]
    python -m analysis.report.readme_results --results results/tiny-ablation --save-reference

The block between ``<!-- ablation-results:begin -->`` and ``<!-- ablation-results:end -->`` in README.md is
rendered from three files of a results folder (written by ``vista report`` and ``analysis.length_effect``):
``ablation_stats.csv`` (seed-paired comparisons), ``ablation_collapse.csv`` (the collapse signature per variant)
and ``length_effect/summary.csv``. ``--save-reference`` copies them to ``reproduce/reference/<profile>/`` (the same
layout), the numbers the README was generated from; the test suite renders that folder again and compares it with
the README, so an edited number or a stale block fails. ``--check`` only compares (exit 1 on a difference).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from analysis.length_effect import FOLDER as LENGTH_FOLDER
from analysis.markdown import markdown_table, table_row
from analysis.report.ablation import COLLAPSE_FILE, STATS_FILE, conclusions
from analysis.report.ablation_stats import OVERALL
from analysis.report.stats import p_digits

REPO = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- ablation-results:begin -->", "<!-- ablation-results:end -->"
INPUTS = (STATS_FILE, COLLAPSE_FILE, f"{LENGTH_FOLDER}/summary.csv")


def reference_folder(profile: str = "tiny-ablation") -> Path:
    """Where the numbers behind the README's block are kept: ``reproduce/reference/<profile>/``."""
    return REPO / "reproduce" / "reference" / profile


def _read(results: Path, name: str) -> pd.DataFrame:
    path = Path(results) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing (run the ablation profile to the end: its report writes it)"
        )
    return pd.read_csv(path)


def overall_table(comparisons: pd.DataFrame) -> list[str]:
    """Per variant: seeds, mean of benchmarks minus the baseline's [bootstrap 95% CI], paired t-test p, Holm p."""
    rows = comparisons[comparisons["benchmark"] == OVERALL].sort_values("variant")
    lines = markdown_table(["variant", "seeds", "mean difference [95% CI]", "p (paired t)", "p (Holm)"])
    for r in rows.itertuples():
        lines.append(table_row([r.variant, r.seeds, f"{r.mean_diff:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
                                p_digits(r.p, digits=3, kind="g"), p_digits(r.p_holm, digits=3, kind="g")]))  # fmt: skip
    return lines


def length_table(summary: pd.DataFrame) -> list[str]:
    """Per variant: accuracy and image contribution at the shortest and longest N, with 95% intervals."""
    words = sorted(set(summary["words"]))
    first, last = words[0], words[-1]
    header = [
        f"accuracy N={first}",
        f"accuracy N={last}",
        f"contribution N={first}",
        f"contribution N={last}",
    ]
    lines = markdown_table(["variant", *header])
    for variant, part in summary.groupby("variant", sort=True):
        cells = []
        for measure, digits in (("accuracy", 1), ("contribution", 2)):
            for n in (first, last):
                row = part[(part["measure"] == measure) & (part["words"] == n)]
                cells.append("—" if row.empty else (
                    f"{row['mean'].iloc[0]:.{digits}f} [{row['ci_low'].iloc[0]:.{digits}f}, "
                    f"{row['ci_high'].iloc[0]:.{digits}f}]"))  # fmt: skip
        lines.append(table_row([variant, *cells]))
    return lines


def render(results: Path) -> str:
    """The README block (markers included) from a results folder or a reference folder (same file layout).

    Raises:
        FileNotFoundError: one of :data:`INPUTS` is missing (named).
    """
    comparisons, collapse, summary = (_read(results, name) for name in INPUTS)
    seeds = int(comparisons["seeds"].max())
    lines = [BEGIN, "", f"Mean of the local benchmarks, each variant minus the baseline of the same seed ({seeds} "
             "seeds; bootstrap 95% interval; paired t-test, Holm-corrected across the variants; "
             f"`{STATS_FILE}`):", ""]  # fmt: skip
    lines += [*overall_table(comparisons), ""]
    lines += [
        "Generated conclusions (`analysis/report/ablation.py`, thresholds stated in the first line):",
        "",
    ]
    lines += conclusions(comparisons, collapse)
    lines += ["", "The length split (`world_len_N`): accuracy (%) and the image's contribution to the gold answer "
              "(nats), mean [95% bootstrap interval over documents and seeds], at the shortest and longest N:", ""]  # fmt: skip
    lines += [*length_table(summary), "", END]
    return "\n".join(lines)


def replace_block(readme: str, block: str) -> str:
    """``readme`` with its marked block replaced by ``block``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    return readme[:start] + block + readme[end + len(END) :]


def save_reference(results: Path, profile: str) -> Path:
    """Copy :data:`INPUTS` of ``results`` to :func:`reference_folder` (same layout)."""
    target = reference_folder(profile)
    for name in INPUTS:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(results) / name, target / name)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report.readme_results",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument(
        "--results", type=Path, required=True, help="an ablation results folder or its reference"
    )
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the README differs")
    parser.add_argument(
        "--save-reference", action="store_true", help="also copy the inputs to reproduce/reference/"
    )
    parser.add_argument(
        "--profile", default="tiny-ablation", help="reference folder name (default tiny-ablation)"
    )
    args = parser.parse_args(argv)
    try:
        block = render(args.results)
        current = args.readme.read_text()
        updated = replace_block(current, block)
    except (FileNotFoundError, ValueError) as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    if args.check:
        print(
            "README block is up to date" if updated == current else "README block differs from these numbers"
        )
        return int(updated != current)
    args.readme.write_text(updated)
    if args.save_reference:
        print(f"reference numbers: {save_reference(args.results, args.profile)}")
    print(f"updated the ablation results block of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
