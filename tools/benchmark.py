"""Throughput benchmarks, one mode per measurement. Each prints its results; with ``--out DIR``
it also appends them to ``DIR/benchmarks.jsonl`` and ``DIR/benchmarks.md``.

From a clean clone (the CIFAR-10 subset in ../shared/data/tfds is optional; torch/timm too):

    python3 -m venv .venv && source .venv/bin/activate
    pip install torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu
    pip install -e ".[test,torch]"                                   # README.md "Install"
    python tools/benchmark.py --model                      # R50x1, 128 px, float32
    python tools/benchmark.py --model R101x1 --resolution 224 --train_batch 16 --dtype bfloat16
    python tools/benchmark.py --model --resolution 224 --ops both --no_timm   # ops.py: both ways
    python tools/benchmark.py --pipeline --data_dir ../shared/data/tfds --dataset cifar10

``--model [NAME]`` (default R50x1) measures in one process, on whatever device JAX uses: the
real train step (`steps.make_train_step` + `optim.make_optimizer`, jitted, state donated) and
jitted inference (`model.apply`) -- images/s, compile time, peak host/device memory, FLOP/s from
XLA's cost analysis and its share of a large matmul's FLOP/s measured in the same run; the input
pipeline alone at the same crop (CIFAR-10 from ``--data_dir``, by default ../shared/data/tfds
when present); and, on the CPU with torch + timm installed, timm's same model on the same
shapes and number of threads, with the ratios bit_jax / timm. It prints a markdown table and
the JSON of the run (see tools/benchmark_steps.py); docs/benchmarks.md has results. Images per
CPU-second (the process's CPU time) stay comparable when other work shares the cores; prefix
``taskset -c 0`` for one-core numbers.

``--pipeline`` measures the training input pipeline (decode, resize 160, random crop 128, flip,
batch 128) in images/s on this machine's CPUs: warm-up steps first (AUTOTUNE settles, buffers
fill), then the median over several timed windows.
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
import benchmark_steps as benchmark  # noqa: E402  (tools/, beside this file)

from bit_jax.data import data_sources, input_pipeline  # noqa: E402

SHARED_TFDS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'tfds'


def measure_pipeline(args: argparse.Namespace) -> dict:
  """Images/s of `input_pipeline.train_data`, as numpy batches reach the train loop."""
  source = data_sources.tfds_source(
    args.dataset, args.split, data_dir=args.data_dir, download=args.download
  )
  batches = input_pipeline.train_data(
    source,
    global_batch_size=args.batch_size,
    resize=args.resize,
    crop=args.crop,
    seed=0,
    preprocess=args.preprocess,
    process_index=0,
    process_count=1,
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
    'measure': 'train pipeline',
    'setup': f'{args.dataset}/{args.split} {args.preprocess} {args.resize}->{args.crop}, '
    f'batch {args.batch_size}',
    'images_per_s': round(statistics.median(rates)),
    'windows_images_per_s': [round(rate) for rate in rates],
    'steps_per_window': args.steps,
    'batch_size': args.batch_size,
    'cpus': os.cpu_count(),
  }


def measure_model(args: argparse.Namespace) -> dict:
  """bit_jax's train and inference steps (and timm's, and the input pipeline) in one run."""
  data_dir = args.data_dir or (str(SHARED_TFDS) if SHARED_TFDS.exists() else None)

  def pipeline(crop: int, batch_size: int) -> dict:
    if data_dir is None and not args.download:
      raise FileNotFoundError(f'no --data_dir given and {SHARED_TFDS} is absent')
    # BiT preprocessing at the model's crop, resizing by the HyperRule's ratio (160 -> 128).
    return measure_pipeline(
      argparse.Namespace(
        **{
          **vars(args),
          'data_dir': data_dir,
          'crop': crop,
          'resize': crop * 5 // 4,
          'batch_size': batch_size,
        }
      )
    )

  return benchmark.run(
    args.model,
    resolution=args.resolution,
    train_batch=args.train_batch,
    inference_batch=args.inference_batch,
    dtype=args.dtype,
    num_classes=args.num_classes,
    steps_=args.timed_steps,
    warmup=args.warmup,
    timm=args.timm,
    pipeline=pipeline,
    ops=args.ops,
  )


def write_row(row: dict, out: Path) -> None:
  out.mkdir(parents=True, exist_ok=True)
  row = {'date': datetime.datetime.now().isoformat(timespec='seconds'), **row}
  with open(out / 'benchmarks.jsonl', 'a') as f:
    f.write(json.dumps(row) + '\n')
  with open(out / 'benchmarks.md', 'a') as f:
    if 'measure' in row:  # --pipeline: one line
      f.write(
        f'| {row["date"]} | {row["measure"]} | {row["setup"]} | '
        f'{row["images_per_s"]:,} images/s | {row["cpus"]} CPUs |\n'
      )
    else:  # --model: a table
      f.write(f'\n{row["date"]}\n\n{benchmark.markdown(row)}\n')


def report(mode: str, row: dict) -> None:
  if mode == 'pipeline':
    print(
      f'{row["measure"]}: {row["images_per_s"]:,} images/s ({row["setup"]}; '
      f'windows {row["windows_images_per_s"]}; {row["cpus"]} CPUs)'
    )
  else:
    print(benchmark.markdown(row), json.dumps(row, indent=1), sep='\n\n')


MODES = {'pipeline': measure_pipeline, 'model': measure_model}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  modes = parser.add_argument_group('modes (at least one)')
  modes.add_argument('--pipeline', action='store_true', help='train input pipeline images/s')
  modes.add_argument(
    '--model',
    nargs='?',
    const='R50x1',
    default=None,
    help='train/inference steps of this model (default R50x1), vs timm',
  )
  parser.add_argument('--data_dir', default=None, help='TFDS data_dir')
  parser.add_argument('--dataset', default='cifar10')
  parser.add_argument('--split', default='train')
  parser.add_argument('--download', action='store_true', help='let TFDS download the data')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--resize', type=int, default=160)
  parser.add_argument('--crop', type=int, default=128)
  parser.add_argument('--preprocess', default='bit', choices=input_pipeline.PREPROCESSINGS)
  parser.add_argument('--steps', type=int, default=50, help='steps per timed window')
  parser.add_argument('--windows', type=int, default=5, help='timed windows (median taken)')
  parser.add_argument('--warmup_steps', type=int, default=20)
  model = parser.add_argument_group('--model')
  model.add_argument('--resolution', type=int, default=128)
  model.add_argument('--train_batch', type=int, default=8)
  model.add_argument('--inference_batch', type=int, default=32)
  model.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  model.add_argument('--num_classes', type=int, default=1000)
  model.add_argument('--timed_steps', type=int, default=10, help='timed steps (median taken)')
  model.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  model.add_argument('--no_timm', dest='timm', action='store_false', help='skip timm')
  model.add_argument(
    '--ops',
    default='auto',
    choices=('auto', 'custom', 'plain', 'both'),
    help="ops.py implementation to time; 'both' times each (see ops.py)",
  )
  parser.add_argument(
    '--out',
    type=Path,
    default=None,
    help='append results to OUT/benchmarks.{jsonl,md} (default: print only)',
  )
  args = parser.parse_args(argv)
  chosen = [mode for mode in MODES if getattr(args, mode)]
  if not chosen:
    parser.error(f'Expected a mode: one of {", ".join("--" + m for m in MODES)}.')
  for mode in chosen:
    row = MODES[mode](args)
    report(mode, row)
    if args.out:
      write_row(row, args.out)


if __name__ == '__main__':
  main()
