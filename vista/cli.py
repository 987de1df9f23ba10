"""The ``vista`` console script: one entry point, one subcommand per concept.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and ``run(args) -> int``.
Modules are imported lazily so that ``vista --help`` stays fast. This is the only module of the ``vista``
package that reaches into ``analysis``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vista.train", "train a LLaVA-style model (stage 1 or 2) with or without VISTA"),
    "data": ("vista.world.cli", "generate the synthetic scene world (datasets and local benchmarks)"),
    "foundations": ("vista.foundations", "train the tiny CLIP and Llama foundations on the synthetic world"),
    "eval": ("vista.evaluation", "evaluate a checkpoint with lmms-eval"),
    "tables": ("analysis.tables", "regenerate the paper's benchmark tables from lmms-eval results"),
    "theory": ("analysis.theory_cli", "exact information profiles of the theory's generative source"),
    "probe": ("analysis.probes.cli", "probe how much each text position depends on the image"),
    "mi": ("analysis.mi_cli", "estimate mutual information between visual and text representations"),
    "report": ("analysis.report", "write REPORT.md, figures and report_metrics.json for a results folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vista", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def strip_launcher_rank(argv: list[str]) -> list[str]:
    """Drop ``--local_rank=N`` / ``--local_rank N``, which the ``deepspeed`` launcher puts before the subcommand.

    The rank is also in the ``LOCAL_RANK`` environment variable (set here if the launcher only passed the flag).
    """
    kept, skip_next = [], False
    for i, arg in enumerate(argv):
        if skip_next:
            skip_next = False
            continue
        for flag in ("--local_rank", "--local-rank"):
            if arg == flag and i + 1 < len(argv):
                os.environ.setdefault("LOCAL_RANK", argv[i + 1])
                skip_next = True
                break
            if arg.startswith(flag + "="):
                os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
                break
        else:
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = strip_launcher_rank(list(sys.argv[1:] if argv is None else argv))
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv)  # prints help or a clear "invalid choice" error
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"vista {name}", description=help_text)
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
