"""``vista data synth --out DIR [--seed S] [--size N]``: write a synthetic world folder (see ``vista.world.synth``)."""

from __future__ import annotations

import argparse
import json
import time


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)
    synth = sub.add_parser("synth", help="scenes, images, captions, instruction data, held-out data, benchmarks")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0, help="world seed (same seed: byte-identical files)")
    synth.add_argument("--size", type=int, default=2000, help="training scenes")
    synth.add_argument("--image-size", type=int, default=32, help="image side in pixels (the vision tower's)")
    synth.add_argument("--records-per-scene", type=int, default=2, help="instruction records per training scene")
    synth.add_argument("--heldout", type=int, default=None, help="held-out scenes (default max(64, size/8))")
    synth.add_argument("--bench-docs", type=int, default=40, help="documents per benchmark task")


def run(args: argparse.Namespace) -> int:
    from vista.world.synth import synthesize

    start = time.perf_counter()
    manifest = synthesize(
        args.out,
        seed=args.seed,
        size=args.size,
        image_size=args.image_size,
        records_per_scene=args.records_per_scene,
        heldout=args.heldout,
        bench_docs=args.bench_docs,
    )
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    print(json.dumps(manifest["counts"], indent=1))
    return 0
