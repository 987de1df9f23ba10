"""Warm start for stage commands: import torch and transformers once, fork a child per ``python -m`` command.

Every CPU stage of the pipeline is ``<this interpreter> -m <module> <args>`` (``vista.cli``, ``analysis.*``), and
each such process spent ~10 s of one core importing torch, transformers' Trainer and lmms-eval before doing any work
(``python -c "import transformers.trainer"``: 10.4 s on the 2-core machine; the default tiny study runs 39 such commands).
:class:`WarmStarter` starts a ``multiprocessing`` *forkserver* that imports :data:`PRELOAD` once; each command then
runs in a process forked from it: ``runpy`` executes the module as ``__main__`` with the same ``sys.argv``, the
stage's environment, and stdout/stderr appended to the stage's log. The command line, its arguments and its results
are unchanged; a user can still paste any command of ``run_all.sh --dry-run`` into a shell.

Each child also imports the pipeline script itself as ``__mp_main__`` (how ``multiprocessing`` prepares a child), so
``vista.layout`` is loaded from the environment's installed ``vista`` (this clone's, in ``.venv``) before the module
runs; ``sys.path[0]`` is the working directory, as with ``python -m``. With fewer than :data:`MIN_COMMANDS` commands
to run the forkserver does not pay off and is not started.

Commands that are not ``python -m`` of this interpreter (the GPU profiles' ``deepspeed`` / ``torchrun`` launchers,
the notebook runner) still run as fresh processes, and so does everything when ``VISTA_WARM_START=0``. The pipeline
uses it only for CPU profiles: a forkserver must not have touched CUDA, and GPU stages are dominated by their work.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import runpy
import signal
import sys
import threading
import traceback
from pathlib import Path

# Imported once by the forkserver: what most stage commands import (measured, see the module docstring). Only
# third-party modules: a preloaded ``vista.*`` module would be executed a second time by ``runpy`` as __main__.
PRELOAD: tuple[str, ...] = (
    "torch",
    "transformers",
    "transformers.trainer",
    "transformers.models.llava.modeling_llava",
    "lmms_eval.evaluator",
    "pandas",
    "scipy.stats",
    "matplotlib.pyplot",
)
DISABLE_VARIABLE = "VISTA_WARM_START"  # "0": every command runs as a fresh process
# The forkserver's imports cost about as much as one command's once (~10-15 s), each warm command then saves ~10 s:
# with fewer commands to run (e.g. `--force report`) fresh processes are faster.
MIN_COMMANDS = 3


def module_command(command: list[str]) -> tuple[str, list[str]] | None:
    """``(module, args)`` if ``command`` is ``<this interpreter> -m module args...``, else None."""
    if len(command) >= 3 and command[0] == sys.executable and command[1] == "-m":
        return command[2], list(command[3:])
    return None


def worth_warming(commands: list[list[str]]) -> bool:
    """Whether at least :data:`MIN_COMMANDS` of ``commands`` would run warm."""
    return sum(module_command(c) is not None for c in commands) >= MIN_COMMANDS


def _run_module(module: str, args: list[str], log_path: str, env: dict[str, str]) -> None:
    """In the forked child: the stage's environment, output to the log, ``python -m module args`` semantics.

    SystemExit passes its code through; an uncaught exception prints its traceback to the log and exits 1, Ctrl-C
    exits 130, as a fresh ``python -m`` would."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    for stream, target in ((sys.stdout, 1), (sys.stderr, 2)):
        stream.flush()
        os.dup2(fd, target)
    os.close(fd)
    sys.argv = [module, *args]
    sys.path[0] = os.getcwd()  # as `python -m` does (the forkserver inherited the pipeline script's folder)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:  # what a fresh `python -m` reports for Ctrl-C (the runner's interrupt code)
        sys.exit(128 + signal.SIGINT)
    except Exception:
        traceback.print_exc()  # as a fresh interpreter prints it (not multiprocessing's "Process ...:" wrapper)
        sys.exit(1)
    finally:
        atexit._run_exitfuncs()  # a forked child leaves with os._exit: run what a normal exit would


class WarmStarter:
    """Runs ``python -m`` commands in children of a forkserver that preloaded :data:`PRELOAD`.

    The forkserver starts with the first command (its imports take ~15 s once) and lives as long as this process.
    """

    def __init__(self, preload: tuple[str, ...] = PRELOAD) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(list(preload))
        self._lock = threading.Lock()

    def call(self, command: list[str], log_path: Path, env: dict[str, str]) -> int:
        """Run ``command`` (must satisfy :func:`module_command`), appending its output to ``log_path``; its exit code.

        Raises:
            ValueError: ``command`` is not ``<this interpreter> -m module ...``.
        """
        parsed = module_command(command)
        if parsed is None:
            raise ValueError(f"not a `{sys.executable} -m module` command: {command}")
        child = self.context.Process(target=_run_module, args=(*parsed, str(log_path), env))
        # multiprocessing is not thread-safe here: start() polls every other running child (process._cleanup), and
        # two threads reading one child's exit status from the forkserver leave one with EOF, i.e. exit code 255 for
        # a command that succeeded. Starting and reading the status hold one lock; waiting does not.
        with self._lock:
            child.start()
        multiprocessing.connection.wait([child.sentinel])
        with self._lock:
            child.join()
            code = child.exitcode
            child.close()
        return code


def enabled() -> bool:
    """False when ``VISTA_WARM_START=0`` (or ``false``/``no``) asks for a fresh process per command."""
    return os.environ.get(DISABLE_VARIABLE, "1").strip().lower() not in ("0", "false", "no")
