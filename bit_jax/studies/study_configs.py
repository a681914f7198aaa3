"""What the study configs (configs/sweeps/) share: their sweep config's shape, the settings of
every CPU miniature and the upstream the miniatures pre-train, and the words of their argument.
"""

from pathlib import Path

import ml_collections

from bit_jax.recipe.defaults import base_config

# The studies' CPU miniatures read the real CIFAR-10 subset beside the repository (see
# ../shared/data/README.md); the full-scale studies read TFDS as usual.
SHARED_TFDS = str(Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'tfds')


# Repeats of every study run but the upstreams: each a different subset draw and training seed.
STUDY_SEEDS = 5


def study_config(base, runs, report: dict) -> ml_collections.ConfigDict:
  """A study's sweep config (see bit_jax/sweep.py): its runs, repeated STUDY_SEEDS times."""
  return ml_collections.ConfigDict(
    dict(base=base, runs=tuple(runs), seeds=STUDY_SEEDS, report=report)
  )


def mini_base(**study) -> dict:
  """The settings every study miniature shares (R14x0.5 on the CIFAR-10 subset at 32 px,
  logging and checkpoints for a few hundred steps), with the study's own on top."""
  return dict(
    model='R14x0.5',
    data_dir=SHARED_TFDS,
    resize=36,
    crop=32,
    log_every=20,
    checkpoint_every=100,
    keep_checkpoints=1,
    **study,
  )


def mini_upstream_run(name: str = 'upstream', **overrides) -> dict:
  """The studies' CPU miniatures have no published checkpoint offline, so they pre-train
  their own upstream: from scratch on CIFAR-10 classes 0-4 (their targets are classes 5-9),
  once (seeds=1): like the published checkpoints at full scale, it is the fixed starting point
  that every repeat of the target runs shares.
  Study settings that make no sense upstream (a validation holdout, plateau, early stopping)
  are switched off here, so every study's upstream is the same run."""
  return dict(
    name=name,
    init='scratch',
    classes=(0, 1, 2, 3, 4),
    val_fraction=None,
    batch_size=64,
    lr=0.03,
    lr_schedule='hyperrule',
    total_steps=300,
    eval_every=0,
    early_stopping_patience=None,
    seeds=1,
    **overrides,
  )


def study_scale(
  scales: dict, arg: str, expected: str = 'mini or full', dataset: str | None = None
) -> tuple[dict, ml_collections.ConfigDict]:
  """A study config's scale from its argument, and the base run config that scale sets (on
  `dataset` instead of the scale's own where one is given, e.g. 'cifar100')."""
  if arg not in scales:
    raise ValueError(f'Expected the argument {expected}; got {arg!r}.')
  scale = scales[arg]
  base = base_config()
  base.update(scale['base'])
  if dataset:
    base.dataset = dataset
  return scale, base


def study_args(arg: str) -> tuple[str, str, str | None]:
  """(protocol, scale, dataset) of a study config's argument: comma-separated words, 'paper'
  for the paper's own protocol (else today's BiT variant, 'bit'), 'mini' for the CPU
  miniature (else 'full'), and at most one other word, a TFDS dataset (e.g. 'cifar100').
  ':full', ':mini', ':full,cifar100', ':paper', ':paper,mini', ':paper,cifar100'."""
  words = [w for w in arg.split(',') if w]
  protocol = 'paper' if 'paper' in words else 'bit'
  scale = 'mini' if 'mini' in words else 'full'
  datasets = [w for w in words if w not in ('paper', 'mini', 'full')]
  if len(datasets) > 1 or (scale == 'mini' and 'full' in words):
    raise ValueError(
      f'Expected words among paper, mini/full and one dataset (e.g. paper,cifar100); got {arg!r}.'
    )
  return protocol, scale, datasets[0] if datasets else None
