"""The ``vista`` console script: one entry point, one subcommand per concept.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and ``run(args) -> int``.
Modules are imported lazily so that ``vista --help`` stays fast. This is the only module of the ``vista``
package that reaches into ``analysis``.

Errors: a :class:`vista.errors.UserError` (and the few library errors listed in :func:`_user_error_types`) is
printed as one line ``vista <command>: <message>`` with its exit code (2 for a wrong command or value, 3 for bad
data); argparse mistakes are one line too. Any other exception is an internal error and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from vista.console import set_quiet
from vista.errors import DATA_ERROR, USAGE_ERROR, UserError, one_line

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vista.train", "train a LLaVA-style model (stage 1 or 2) with or without VISTA"),
    "data": ("vista.world.cli", "generate the synthetic scene world (datasets and local benchmarks)"),
    "foundations": ("vista.foundations", "train the tiny CLIP and Llama foundations on the synthetic world"),
    "eval": ("vista.evaluation", "evaluate a checkpoint with lmms-eval"),
    "tables": ("analysis.tables.cli", "regenerate the paper's benchmark tables from lmms-eval results"),
    "theory": (
        "analysis.theory.cli",
        "information profiles of the theory's generative source (exact or Monte Carlo)",
    ),
    "probe": ("analysis.probes.cli", "probe how much each text position depends on the image"),
    "mi": ("analysis.mi.cli", "estimate mutual information between visual and text representations"),
    "report": (
        "analysis.report.cli",
        "write REPORT.md, figures and report_metrics.json for a results folder",
    ),
    "tiny-model": (
        "vista.tiny_models",
        "write a tiny random checkpoint of a vision-language family (tests, demos)",
    ),
}

# One example per subcommand, shown at the end of `vista <command> --help` (paths of run_all.sh's layout).
EXAMPLES: dict[str, str] = {
    "train": "vista train --config reproduce/configs/tiny/pretrain.yaml variant=vista training.seed=1 --dry-run",
    "data": "vista data synth --out results/tiny/data --size 2000",
    "foundations": "vista foundations --data results/tiny/data --out results/tiny/foundations",
    "eval": "vista eval --checkpoint results/tiny/runs/tiny__vista__seed1/finetune --tasks local "
    "--include-path results/tiny/data/benchmarks --out results/tiny/eval/tiny__vista__seed1",
    "tables": "vista tables --results results/tiny/eval --out results/tiny/tables",
    "theory": "vista theory --K 4 --M 8 --T 64 --alpha 0.3 --out my_theory  # the tiny profile's settings",
    "probe": "vista probe --checkpoint results/tiny/runs/tiny__baseline__seed1/finetune --checkpoint results/tiny/runs/tiny__vista__seed1/finetune "
    "--data results/tiny/data/heldout.json --out results/tiny/probes",
    "mi": "vista mi checkpoint --checkpoint results/tiny/runs/tiny__vista__seed1/finetune --data results/tiny/data/heldout.json "
    "--out results/tiny/mi/vista",
    "report": "vista report --results results/tiny",
    "tiny-model": "vista tiny-model --family idefics3 --out runs/tiny-models/idefics3",
}


# Extra lines for a subcommand's --help (after its example).
NOTES: dict[str, str] = {
    "train": "resume an interrupted run: add training.resume_from_checkpoint=auto (continues from the last "
    "checkpoint-N);\nreplace a finished run in training.output_dir: --overwrite",
    "probe": "images: --image-folder defaults to the JSON's folder, else its images/ subfolder (vista data synth), "
    "else the checkpoint's training data.image_folder",
}


def _shows(default: object) -> bool:
    """Whether ``--help`` should print this default (not for None, False, [] or SUPPRESS; 0 is shown)."""
    return not (default is None or default is False or default == [] or default == argparse.SUPPRESS)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to options that have a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and "default" not in text
            and action.option_strings
            and _shows(default)
            and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            text += " (default: %(default)s)"
        return text


class VistaArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes are one line: ``vista <command>: <problem> (see ... --help)``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        """An option without help text still shows its default (argparse prints nothing for it otherwise)."""
        default = kwargs.get("default")
        if args and str(args[0]).startswith("-") and not kwargs.get("help") and _shows(default):
            kwargs["help"] = "(default: %(default)s)"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):  # argparse's contract: print and exit 2
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("vista-mllm")
    except metadata.PackageNotFoundError:
        import vista

        return getattr(vista, "__version__", "unknown")


def build_parser() -> argparse.ArgumentParser:
    epilog = "examples:\n" + "\n".join(f"  {EXAMPLES[name]}" for name in ("data", "train", "report"))
    epilog += "\n\n'vista COMMAND --help' lists a command's options with their defaults and an example."
    description = "vista: train LLaVA-style models with the VISTA objective, evaluate and analyse them."
    parser = VistaArgumentParser(prog="vista", description=description, epilog=epilog)
    parser.add_argument("--version", action="version", version=f"vista {_version()}")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="more log output (debug level)")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars"
    )


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


def configure_logging(verbose: bool, quiet: bool) -> None:
    """Log levels: ``-v`` DEBUG everywhere; default INFO for vista's own loggers and WARNING for libraries;
    ``-q`` WARNING everywhere and no progress bars (:func:`vista.console.set_quiet`)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        force=True,
    )
    for name in ("vista", "analysis"):
        logging.getLogger(name).setLevel(level)
    if quiet:
        set_quiet()


def _split_global(argv: list[str]) -> tuple[list[str], list[str]]:
    """Global options (before the command name) and the rest, which starts with the command name."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return argv[:i], argv[i:]
    return argv, []


def _user_error_types() -> dict[type, int]:
    """Library exceptions that describe the user's input (their messages name the file/key/value)."""
    types: dict[type, int] = {UserError: -1}
    for module, name, code in (
        ("vista.data", "BadSampleError", DATA_ERROR),
        ("vista.trainer", "NonFiniteLossError", DATA_ERROR),
        ("vista.templates", "ConversationError", DATA_ERROR),
        ("analysis.tables.benchmark_map", "ResultsFormatError", USAGE_ERROR),
    ):
        loaded = sys.modules.get(module)  # only modules the command imported can have raised
        if loaded is not None and hasattr(loaded, name):
            types[getattr(loaded, name)] = code
    return types


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Options and positionals in any order (``vista train --config c.yaml variant=vista --dry-run
    training.seed=2``): argparse's intermixed parsing, except for commands with their own sub-actions
    (``vista data synth``), which it does not support."""
    if any(isinstance(action, argparse._SubParsersAction) for action in parser._actions):
        return parser.parse_args(argv)
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = strip_launcher_rank(list(sys.argv[1:] if argv is None else argv))
    top = build_parser()
    global_args, rest = _split_global(argv)
    if not rest or rest[0] not in SUBCOMMANDS:
        top.parse_args(argv)  # --help, --version, or a one-line "invalid choice" error (exit 2)
        return USAGE_ERROR
    options = top.parse_args([*global_args, rest[0]])
    configure_logging(options.verbose, options.quiet)
    name, rest = rest[0], rest[1:]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = VistaArgumentParser(
        prog=f"vista {name}",
        description=help_text,
        epilog=f"example:\n  {EXAMPLES[name]}" + (f"\n\n{NOTES[name]}" if name in NOTES else ""),
    )
    module.configure_parser(parser)
    args = parse_command_line(parser, rest)
    try:
        return int(module.run(args) or 0)
    except Exception as error:
        for kind, code in _user_error_types().items():
            if isinstance(error, kind):
                code = error.exit_code if isinstance(error, UserError) else code
                action = getattr(args, "action", None) or getattr(
                    args, "mode", None
                )  # data synth, mi features
                prefix = f"vista {name}" + (f" {action}" if isinstance(action, str) else "")
                print(f"{prefix}: {one_line(error)}", file=sys.stderr)
                return code
        raise


if __name__ == "__main__":
    sys.exit(main())
