"""Bias, spread and wall time of the MI estimators on correlated Gaussians with known MI.

    .venv/bin/python reproduce/benchmarks/mi_estimators.py [--seeds 10] [--bmi-python /path/to/python]

For every (dimension d, true MI) setting it draws ``--n`` samples (default 5,000, the protocol of Czyz et al.,
"Beyond Normal", NeurIPS 2023) per seed with ``d`` correlated coordinate pairs, runs every estimator on the same
samples and prints bias (mean estimate - truth), standard deviation over seeds, RMSE and mean wall time.

Comparison with the ``benchmark-mi`` package (``import bmi``): its KSG (``KSGEnsembleFirstEstimator``, both its
defaults -- neighbourhoods (5, 10), Euclidean -- and the configuration matching ours: k = 3, Chebyshev) and its CCA
estimator run on exactly the same samples. ``benchmark-mi`` 0.1.3 pins numpy<2, pandas<2, pydantic<2 and jax<0.5,
which would break this project's environment, so it is looked for in this interpreter first and otherwise run
in another one given by ``--bmi-python`` (or ``$VISTA_BMI_PYTHON``), e.g. a side venv made with
``python -m venv /tmp/bmi-venv && /tmp/bmi-venv/bin/pip install benchmark-mi jax==0.4.30 jaxlib==0.4.30``
(jax 0.4.38, which pip picks, fails to import with the pinned tensorflow-probability). Its wall times are
measured inside that process around each ``estimate`` call (jax import excluded). Without it the comparison is
skipped with the reason printed.

The last line is a summary of ratios (ours / theirs: below 1 means ours is more accurate or faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from analysis.mi import CRITIC_METHODS, estimate_mi, rho_for_mi, sample_correlated_gaussians  # noqa: E402

BMI_SCRIPT = r"""
import json, sys, time
import numpy as np
import bmi
data = np.load(sys.argv[1])
estimators = {
    "bmi_ksg_k3_cheb": lambda: bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(3,), metric_x="chebyshev"),
    "bmi_ksg_default": lambda: bmi.estimators.KSGEnsembleFirstEstimator(),
    "bmi_cca": lambda: bmi.estimators.CCAMutualInformationEstimator(),
}
rows = []
for task in json.loads(sys.argv[2]):
    x, y = data[f"x{task}"], data[f"y{task}"]
    for name, make in estimators.items():
        start = time.perf_counter()
        value = float(make().estimate(x, y))
        rows.append({"task": task, "method": name, "estimate": value, "seconds": time.perf_counter() - start})
json.dump(rows, open(sys.argv[3], "w"))
"""


def find_bmi_python(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter that can ``import bmi``, or ``(None, reason)``."""
    candidates = [sys.executable] + [p for p in (explicit, os.environ.get("VISTA_BMI_PYTHON")) if p]
    reasons = []
    for python in candidates:
        probe = subprocess.run([python, "-c", "import bmi"], capture_output=True, text=True)
        if probe.returncode == 0:
            return python, ""
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        reasons.append(f"{python}: {last}")
    hint = "pass --bmi-python PATH to an interpreter with benchmark-mi installed (see the module docstring)"
    return None, "; ".join(reasons) + f"; {hint}"


def run_bmi(python: str, samples: dict[int, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "samples.npz", Path(tmp) / "out.json"
        arrays = {f"x{t}": x for t, (x, _) in samples.items()} | {f"y{t}": y for t, (_, y) in samples.items()}
        np.savez(npz, **arrays)
        cmd = [python, "-c", BMI_SCRIPT, str(npz), json.dumps(list(samples)), str(out)]
        subprocess.run(cmd, check=True, env=os.environ | {"JAX_PLATFORMS": "cpu"})
        return pd.DataFrame(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--mis", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--methods", nargs="+", default=["ksg", "gaussian", *CRITIC_METHODS])
    parser.add_argument("--critic-steps", type=int, default=500)
    parser.add_argument("--bmi-python", default=None)
    parser.add_argument("--out", default=None, help="also write the per-run table here (.csv)")
    args = parser.parse_args()

    settings = [(d, mi) for d in args.dims for mi in args.mis]
    samples, truth, rows = {}, {}, []
    for task, ((d, mi), seed) in enumerate((s, seed) for s in settings for seed in range(args.seeds)):
        x, y, true = sample_correlated_gaussians(args.n, [rho_for_mi(mi, d)] * d, seed=seed)
        samples[task], truth[task] = (x, y), (d, mi, seed, true)
        for method in args.methods:
            opts = {"steps": args.critic_steps, "seed": seed} if method in CRITIC_METHODS else {}
            start = time.perf_counter()
            est = estimate_mi(x, y, method, **opts)
            rows.append({"task": task, "method": method, "estimate": est.value, "cap": est.cap,
                         "stderr": est.stderr, "seconds": time.perf_counter() - start})  # fmt: skip
        print(f"task {task + 1}/{len(settings) * args.seeds}: d={d} I={mi} seed={seed} done", flush=True)

    python, reason = find_bmi_python(args.bmi_python)
    if python:
        print(
            f"running benchmark-mi estimators with {python} on the same {len(samples)} sample sets",
            flush=True,
        )
        rows += run_bmi(python, samples).to_dict("records")
    else:
        print(f"benchmark-mi comparison skipped: {reason}")

    runs = pd.DataFrame(rows)
    meta = pd.DataFrame(
        [(t, *v) for t, v in truth.items()], columns=["task", "dim", "true_mi", "seed", "truth"]
    )
    runs = runs.merge(meta, on="task")
    runs["error"] = runs["estimate"] - runs["truth"]
    if args.out:
        runs.to_csv(args.out, index=False)
    report(runs, python is not None, reason)


def report(runs: pd.DataFrame, have_bmi: bool, reason: str) -> None:
    table = runs.groupby(["dim", "true_mi", "method"], sort=False).agg(
        bias=("error", "mean"),
        std=("error", "std"),
        reported_stderr=("stderr", "mean"),
        rmse=("error", lambda e: float(np.sqrt(np.mean(e**2)))),
        seconds=("seconds", "mean"),
    )
    pd.set_option("display.width", 200)
    print("\nper setting (nats; std over seeds vs mean reported stderr; seconds per estimate):")
    print(table.round(4).to_string())
    overall = runs.groupby("method", sort=False).agg(
        mean_abs_bias=("error", lambda e: float(np.mean(np.abs(e)))),
        rmse=("error", lambda e: float(np.sqrt(np.mean(e**2)))),
        seconds=("seconds", "mean"),
    )
    print("\noverall:")
    print(overall.round(4).to_string())
    lowdim = runs[runs["dim"] <= 2].groupby("method")["error"].agg(lambda e: float(np.abs(e).max()))
    print("\nworst |error| on d <= 2 (target for ksg and gaussian: < 0.05):")
    print(lowdim.round(4).to_string())
    if "infonce" in set(runs["method"]):
        nce = runs[runs["method"] == "infonce"]
        print(
            f"\ninfonce: max(estimate - cap) = {float((nce['estimate'] - nce['cap']).max()):.4g} (must be <= 0)"
        )

    parts = []
    if have_bmi:
        both = runs.pivot_table(index="task", columns="method", values="estimate")
        positive = both["ksg"] > 0  # bmi clips its KSG at 0
        agree = float(np.abs(both.loc[positive, "ksg"] - both.loc[positive, "bmi_ksg_k3_cheb"]).max())
        print(
            f"\nours vs bmi KSG (k=3, Chebyshev) on the same samples, where ours > 0: max |diff| = {agree:.2e}"
        )
        for theirs in ("bmi_ksg_k3_cheb", "bmi_ksg_default"):
            parts.append(
                f"ksg_rmse_ours/{theirs}={overall.loc['ksg', 'rmse'] / overall.loc[theirs, 'rmse']:.3f}"
            )
            parts.append(
                f"ksg_time_ours/{theirs}={overall.loc['ksg', 'seconds'] / overall.loc[theirs, 'seconds']:.3f}"
            )
        ratio = overall.loc["gaussian", "rmse"] / overall.loc["bmi_cca", "rmse"]
        parts.append(f"gaussian_rmse_ours/bmi_cca={ratio:.3f}")
        parts.append(
            f"gaussian_time_ours/bmi_cca={overall.loc['gaussian', 'seconds'] / overall.loc['bmi_cca', 'seconds']:.3f}"
        )
    else:
        parts.append(f"bmi comparison skipped ({reason.split(';')[0]})")
    if "ksg" in overall.index and "gaussian" in overall.index:
        parts.append(
            f"ksg_rmse/gaussian_rmse={overall.loc['ksg', 'rmse'] / overall.loc['gaussian', 'rmse']:.3f}"
        )
    print("SUMMARY " + " ".join(parts))


if __name__ == "__main__":
    main()
