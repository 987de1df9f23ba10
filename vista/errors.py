"""Errors the user can fix, as opposed to bugs: the ``vista`` command prints them as one line, without a traceback.

``vista <command>: <what is wrong, which file/key/value, what to type instead>`` and exit code
:attr:`UserError.exit_code` (2: a wrong command, option, config key or value; 3: bad data). Every other exception
is an internal error and keeps its traceback. The classes also derive from the builtin exception a Python caller
expects (``ValueError``, ``FileNotFoundError``), so library code can raise them without changing its contract.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections.abc import Iterable

USAGE_ERROR = 2  # a wrong command, option, path, config key or value
DATA_ERROR = 3  # the input data cannot be used


class UserError(Exception):
    """Something the user typed or pointed at is wrong; the message says what to do instead."""

    exit_code: int = USAGE_ERROR


class UsageError(UserError, ValueError):
    """A wrong option, config key or value."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named (or the layout implies) does not exist."""


class DataError(UserError, ValueError):
    """The input data cannot be used (exit code 3): no usable records, too few samples, nothing to compute."""

    exit_code = DATA_ERROR


def closest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``word`` (``difflib`` ratio >= 0.6, ignoring
    case), else ``""``."""
    lowered = {str(choice).lower(): choice for choice in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    return f"; did you mean {lowered[match[0]]!r}?" if match else ""


def refuse_to_replace(path: str | os.PathLike) -> str:
    """The message of a command that will not overwrite an earlier result at ``path`` without ``--overwrite``."""
    return f"{path} exists (a finished run's result); pass --out DIR to write elsewhere or --overwrite to replace it"


def one_line(error: BaseException | str) -> str:
    """A (possibly multi-line) message as one line: its non-empty lines joined by ``; ``."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (argparse prints the message as one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _finite_float(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"must be a {'number >= 0' if allow_zero else 'positive number'}, got {text}"
        )
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    return _finite_float(text, allow_zero=False)


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number >= 0."""
    return _finite_float(text, allow_zero=True)
