"""Throughput benchmarks, one mode per measurement; each prints its number and appends a row
to ``<out>/benchmarks.jsonl`` and ``<out>/benchmarks.md``.

    python tools/benchmark.py --pipeline --data_dir ../shared/data/tfds --dataset cifar10

measures the training input pipeline (decode, resize 160, random crop 128, flip, batch 128)
in images/s on this machine's CPUs: warm-up steps first (AUTOTUNE settles, buffers fill),
then the median over several timed windows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bit_jax import data_sources, input_pipeline  # noqa: E402


def measure_pipeline(args: argparse.Namespace) -> dict:
    """Images/s of `input_pipeline.train_data`, as numpy batches reach the train loop."""
    source = data_sources.tfds_source(
        args.dataset, args.split, data_dir=args.data_dir, download=args.download
    )
    batches = input_pipeline.train_data(
        source, global_batch_size=args.batch_size, resize=args.resize, crop=args.crop,
        seed=0, preprocess=args.preprocess, process_index=0, process_count=1,
    )
    for _ in range(args.warmup_steps):
        next(batches)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            next(batches)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return {
        "measure": "train pipeline",
        "setup": f"{args.dataset}/{args.split} {args.preprocess} {args.resize}->{args.crop}, "
                 f"batch {args.batch_size}",
        "images_per_s": round(statistics.median(rates)),
        "windows_images_per_s": [round(rate) for rate in rates],
        "steps_per_window": args.steps,
        "cpus": os.cpu_count(),
    }


def write_row(row: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    row = {"date": datetime.datetime.now().isoformat(timespec="seconds"), **row}
    with open(out / "benchmarks.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    with open(out / "benchmarks.md", "a") as f:
        f.write(f"| {row['date']} | {row['measure']} | {row['setup']} | "
                f"{row['images_per_s']:,} images/s | {row['cpus']} CPUs |\n")


MODES = {"pipeline": measure_pipeline}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_argument_group("modes (at least one)")
    modes.add_argument("--pipeline", action="store_true", help="train input pipeline images/s")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--split", default="train")
    parser.add_argument("--download", action="store_true", help="let TFDS download the data")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--resize", type=int, default=160)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--preprocess", default="bit", choices=input_pipeline.PREPROCESSINGS)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (median taken)")
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("workdirs/benchmarks"))
    args = parser.parse_args(argv)
    chosen = [mode for mode in MODES if getattr(args, mode)]
    if not chosen:
        parser.error(f"Expected a mode: one of {', '.join('--' + m for m in MODES)}.")
    for mode in chosen:
        row = MODES[mode](args)
        print(f"{row['measure']}: {row['images_per_s']:,} images/s ({row['setup']}; "
              f"windows {row['windows_images_per_s']}; {row['cpus']} CPUs)")
        write_row(row, args.out)


if __name__ == "__main__":
    main()
