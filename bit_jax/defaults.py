"""Every config field of a run, its default and what it means.

Configs in `configs/` start from `base_config()` and change what their experiment needs. A
field left None is derived before the run starts (mostly by the BiT-HyperRule from the
phase's own data); `--dry_run` prints the resolved values and `<workdir>/phases.json` keeps
them.
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from bit_jax import metric_names


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # The model and the weights it starts from.
  # Published name or R<depth>x<width>; None: the architecture of the weights `init` names
  # (a model that differs from them is refused). init='scratch' needs one.
  c.model = config_dict.placeholder(str)
  c.init = 'BiT-M-R50x1'  # first phase: published name, official .npz path, or 'scratch'
  # The head of a phase that starts from other weights: 'reset' (a fresh zero head, as BiT
  # fine-tuning does) or 'keep'. None: 'reset' from a checkpoint or for a new task (another
  # dataset, split, classes or label_key), 'keep' when continuing the same task.
  c.head = config_dict.placeholder(str)
  c.dtype = 'float32'  # activations; 'bfloat16' on TPU/GPU (parameters stay float32)
  c.ops = 'auto'  # 'custom' (hand-written gradients) | 'plain' | 'auto' (see ops.py)
  # Dropout on the pre-logits, before the head, in training only (Ahmad & Shin use 0.5).
  c.dropout = 0.0

  # Data.
  c.dataset = 'cifar10'  # TFDS name, 'sklearn_digits' or 'folder:<root>'
  c.data_dir = config_dict.placeholder(str)  # TFDS data_dir
  c.train_split = 'train'
  c.label_key = 'label'  # TFDS feature with the labels ('labels' for multi-label data)
  c.eval_split = config_dict.placeholder(str)  # None: 'validation' for ImageNet, else 'test'
  c.skip_corrupt = False  # image folders: leave out (and list) unreadable images
  c.classes = config_dict.placeholder(tuple)  # keep these classes only, relabelled 0..
  c.num_classes = config_dict.placeholder(int)  # None: from the dataset
  c.shots = config_dict.placeholder(int)  # k examples per class (nested in k' > k)
  c.fraction = config_dict.placeholder(float)  # stratified fraction (20% inside 40% ...)
  c.subset_seed = 0
  c.val_fraction = config_dict.placeholder(float)  # held out of train: early stopping/plateau
  c.preprocess = 'bit'  # 'bit' (resize, crop, flip) | 'inception' | 'none' (resize to crop)
  c.resize = config_dict.placeholder(int)  # None: HyperRule (160 / 512)
  c.crop = config_dict.placeholder(int)  # None: HyperRule (128 / 480)
  c.data_shards = config_dict.placeholder(int)  # None: one per process (see train.py)

  # Optimisation (BiT-HyperRule defaults).
  c.batch_size = 512
  c.eval_batch_size = config_dict.placeholder(int)  # None: batch_size
  c.batch_split = 1  # gradient accumulation: micro-batches per step
  c.base_lr = 0.003  # the official BiT lr, at any batch size
  c.lr_scaling = 'none'  # 'none' | 'linear': lr = base_lr * batch_size / base_batch
  c.base_batch = 512  # used by lr_scaling='linear' only
  c.lr = config_dict.placeholder(float)  # None: base_lr (scaled if asked)
  c.lr_schedule = 'hyperrule'  # 'hyperrule' | 'constant' | 'plateau' | 'step' (schedules.py)
  c.total_steps = config_dict.placeholder(int)  # None: HyperRule (500 / 10k / 20k)
  c.epochs = config_dict.placeholder(float)  # instead of total_steps
  c.warmup_steps = config_dict.placeholder(int)  # None: HyperRule, scaled to total_steps
  c.decay_steps = config_dict.placeholder(tuple)  # None: HyperRule, scaled to total_steps
  c.warmup_epochs = config_dict.placeholder(float)  # instead of warmup_steps
  c.decay_epochs = config_dict.placeholder(tuple)  # instead of decay_steps
  c.decay_factor = 0.1  # γ of lr_schedule='step' at each decay step ('hyperrule' is /10)
  c.mixup_alpha = config_dict.placeholder(float)  # None: 0 below 20k examples, else 0.1
  c.momentum = 0.9
  c.weight_decay = 0.0  # coupled, on kernels only
  c.freeze = ''  # regex over parameter paths, e.g. 'root_block|block1'
  # Regex over parameter paths that start from the scratch initialiser (seeded by `seed`)
  # while the rest load from `init`: Soekhoe et al.'s SnT (see bit_jax/layers.py).
  c.reinit = ''
  c.loss = 'softmax'  # 'softmax' | 'sigmoid' (multi-label)
  c.plateau_patience = 3  # evaluations without a better `monitor` before lr *= factor
  c.plateau_factor = 0.1
  c.early_stopping_patience = config_dict.placeholder(int)  # evaluations, on `monitor`
  # What plateau and early stopping watch: 'val_loss' (lower is better), 'val_top1' or
  # 'val_top5' (higher is better); needs val_fraction.
  c.monitor = metric_names.VAL_LOSS

  # Few-shot linear probe of the pre-logits (bit_jax/fewshot.py) at every evaluation, e.g. to
  # watch feature quality during upstream training.
  c.fewshot_shots = ()  # e.g. (1, 5, 10); () turns it off
  c.fewshot_dataset = config_dict.placeholder(str)  # None: the phase's dataset
  c.fewshot_classes = config_dict.placeholder(tuple)  # e.g. classes not trained on
  c.fewshot_l2 = 1024.0

  # Bookkeeping.
  c.seed = 0
  c.log_every = 10
  c.eval_every = 100  # steps; 0: only at the end of each phase
  c.checkpoint_every = 100
  c.keep_checkpoints = 2

  # Per-phase overrides of any field above (plus 'name'); () is one phase.
  c.phases = ()
  return c


# The studies' CPU miniatures read the real CIFAR-10 subset beside the repository (see
# ../shared/data/README.md); the full-scale studies read TFDS as usual.
SHARED_TFDS = str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'tfds')


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
