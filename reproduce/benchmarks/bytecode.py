"""What compiling the locked packages to bytecode at install saves (``reproduce/setup_env.sh``, step 4).

    python reproduce/benchmarks/bytecode.py [--rounds 3]

Each round starts the environment's Python twice, in alternating order, with the imports every ``vista train`` /
``vista eval`` process makes (``vista.train``, ``transformers.trainer``, ``peft``, ``lmms_eval``):

- ``with_pyc``: as installed, reading the ``.pyc`` files ``setup_env.sh`` compiled;
- ``without_pyc``: ``PYTHONPYCACHEPREFIX`` pointed at an empty folder, so Python finds no ``.pyc`` and compiles every
  module from source, as it did before on machines that set ``PYTHONDONTWRITEBYTECODE=1`` (nothing is written).

Both arms run with ``PYTHONDONTWRITEBYTECODE=1``. It prints each start's wall seconds and, last,
``with_over_without=<median ratio of the rounds>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

IMPORTS = "import vista.train, transformers.trainer, peft, lmms_eval"


def start_seconds(env: dict[str, str]) -> float:
    """Wall seconds of one ``python -c IMPORTS``.

    Raises:
        subprocess.CalledProcessError: the imports failed.
    """
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    base.pop("PYTHONPYCACHEPREFIX", None)
    ratios = []
    with tempfile.TemporaryDirectory() as empty:
        arms = {"with_pyc": base, "without_pyc": {**base, "PYTHONPYCACHEPREFIX": empty}}
        for r in range(args.rounds):
            order = list(arms) if r % 2 == 0 else list(reversed(arms))
            seconds = {name: start_seconds(arms[name]) for name in order}
            ratios.append(seconds["with_pyc"] / seconds["without_pyc"])
            print(
                f"round {r + 1}: "
                + ", ".join(f"{n} {seconds[n]:.2f} s" for n in order)
                + f", ratio {ratios[-1]:.3f}"
            )
    print(f"with_over_without={statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
