"""Wall time of building the synthetic world and its tiny foundations (target: at most 5 minutes on 2 CPU cores).

    .venv/bin/python reproduce/benchmarks/world_build_time.py [--out /tmp/world_build] [--size 4000]

Runs ``vista data synth`` then ``vista foundations`` with their defaults (in this process, one intra-op thread as
the CLI uses), and prints each step's wall time, the sizes written and, last, one line
``total_seconds=<t> target_seconds=300 ratio=<t/300>`` (ratio <= 1 meets the target). The machine is shared:
the load average is printed beside the times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
TARGET_SECONDS = 300.0


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/world_build"))
    parser.add_argument("--size", type=int, default=4000, help="records per split (the synth default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from vista.foundations import FoundationSpec, build_foundations
    from vista.world.cli import synth

    torch.set_num_threads(1)
    shutil.rmtree(args.out, ignore_errors=True)
    data, found = args.out / "data", args.out / "foundations"

    start = time.perf_counter()
    manifest = synth(data, seed=args.seed, size=args.size)
    synth_seconds = time.perf_counter() - start
    start = time.perf_counter()
    log = build_foundations(data, found, FoundationSpec(seed=args.seed))
    found_seconds = time.perf_counter() - start
    total = synth_seconds + found_seconds

    n_data, bytes_data = folder_size(data)
    n_found, bytes_found = folder_size(found)
    c = manifest["counts"]
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; cores: {os.cpu_count()}")
    print(
        f"synth: {synth_seconds:.1f} s; {c['pretrain']} pretrain + {c['finetune']} finetune "
        f"({c['finetune_text_only']} text-only) + {c['heldout']} held-out records, {c['images']} images, "
        f"{len(c['benchmarks'])} benchmark tasks; {n_data} files, {bytes_data / 2**20:.1f} MiB"
    )
    print(
        f"words per finetune record: {manifest['words']['finetune_total']}; vocabulary {manifest['vocabulary_words']}"
    )
    print(
        f"foundations: {found_seconds:.1f} s (prepare {log['prepare_seconds']} s, CLIP {log['clip']['seconds']} s, "
        f"LM {log['lm']['seconds']} s); {n_found} files, {bytes_found / 2**20:.1f} MiB; tokenizer {log['vocab_size']}"
    )
    print(
        f"losses: CLIP {log['clip']['first_mean']:.3f} -> {log['clip']['last_mean']:.3f}, "
        f"LM {log['lm']['first_mean']:.3f} -> {log['lm']['last_mean']:.3f}"
    )
    print(f"total_seconds={total:.1f} target_seconds={TARGET_SECONDS:.0f} ratio={total / TARGET_SECONDS:.3f}")


if __name__ == "__main__":
    main()
