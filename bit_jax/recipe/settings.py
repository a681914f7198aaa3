"""What a phase holds: every setting of a run, declared once.

`PhaseSettings` is one resolved phase. Each field is declared here and nowhere else, with its
type (the annotation; `| None` where None means "derived in the plan"), its default, the values
it allows, one line of meaning, whether changing it on resume changes the training, and who
sets it:

* 'config': the config file or the command line (`--config.<field>=`, `--phase=<phase>.<field>=`);
* 'phase': a phase's own override only (`name`);
* 'plan': the plan, while it resolves the phase (`num_examples`, `data_digest`, ...).

From these declarations come the config's defaults (`bit_jax/recipe/defaults.py`), the checks
(`check`), the fields a resume compares (`TRAINING_FIELDS`), the rows `--dry_run` prints
(`rows`) and README's field list (`markdown`). ml_collections stays the command-line surface;
`bit_jax.recipe.plan` turns a config into `PhaseSettings` once, and nothing after the plan reads a
ConfigDict.
"""

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from bit_jax.data.input_pipeline import PREPROCESSINGS
from bit_jax.models.ops import CHOICES as OPS
from bit_jax.runtime.metric_names import MONITOR_MODES

# The allowed values of the layers above the schema (the loss functions, the schedules) are
# declared here, and those layers take them from here; the model's and the pipeline's own
# (`ops`, `preprocess`) come from below.
HEADS = ('reset', 'keep')
LOSSES = ('softmax', 'sigmoid')
LR_SCHEDULES = ('hyperrule', 'constant', 'plateau', 'step')
LR_SCALINGS = ('none', 'linear')
DTYPES = ('float32', 'bfloat16')

GROUPS = (
  'model',
  'data',
  'optimisation',
  'schedule',
  'few-shot probe',
  'bookkeeping',
  'set by the plan',
)


@dataclasses.dataclass(frozen=True)
class Allowed:
  """The values a field allows beyond its type: a test and the words that say it."""

  ok: Callable[[Any], bool]
  words: str
  why: Callable[[Any], str] | None = None  # what is wrong with a value it refuses


def integer(low: int) -> Allowed:
  return Allowed(lambda v: v >= low, f'an integer >= {low}')


def number(low, high=None, *, open_low=False, open_high=False) -> Allowed:
  def ok(v):
    above = v > low if open_low else v >= low
    below = high is None or (v < high if open_high else v <= high)
    return math.isfinite(v) and above and below

  upper = 'inf)' if high is None else f'{high}{")" if open_high else "]"}'
  return Allowed(ok, f'a number in {"(" if open_low else "["}{low}, {upper}')


def one_of(*choices) -> Allowed:
  return Allowed(lambda v: v in choices, f'one of {tuple(choices)}')


NON_NEGATIVE = Allowed(lambda v: all(x >= 0 for x in v), 'a tuple of numbers >= 0')


def _regex_error(text: str) -> str:
  try:
    re.compile(text)
  except re.error as e:
    return f'not a regular expression: {e}'
  return ''


REGEX = Allowed(
  lambda v: not _regex_error(v), 'a regular expression over parameter paths', _regex_error
)


def setting(
  default,
  meaning: str,
  allowed: Allowed | None = None,
  *,
  group: str,
  training: bool = True,
  by: str = 'config',
):
  """One declared field. `training=False`: it only says how a run is watched or where its
  data lives, so a resume may change it."""
  assert group in GROUPS and by in ('config', 'phase', 'plan'), (group, by)
  return dataclasses.field(
    default=default,
    metadata=dict(meaning=meaning, allowed=allowed, group=group, training=training, by=by),
  )


# fmt: off
@dataclasses.dataclass(frozen=True)
class PhaseSettings:
  """Every setting of one phase; the plan's resolved values (see the module docstring)."""

  # The model and the weights it starts from.
  model: str | None = setting(None, "published name or R<depth>x<width>; None: the init's architecture (a different one is refused); init='scratch' needs one", group='model')
  init: str = setting('BiT-M-R50x1', "first phase: a published name, a path (.npz, timm folder, hf-hub:...) or 'scratch'; later phases: 'previous'", group='model')
  head: str | None = setting(None, "'reset' (a fresh zero head, as BiT fine-tuning) or 'keep'; None: 'reset' from a checkpoint or for a new task, 'keep' on the same task; 'new' once resolved for init='scratch'", one_of(*HEADS), group='model')
  dtype: str = setting('float32', "activations ('bfloat16' on TPU/GPU; parameters stay float32)", one_of(*DTYPES), group='model')
  ops: str = setting('auto', "'custom' (hand-written gradients), 'plain' or 'auto' (see bit_jax/models/ops.py)", one_of(*OPS), group='model', training=False)
  dropout: float = setting(0.0, 'dropout on the pre-logits before the head, in training only (Ahmad & Shin: 0.5)', number(0, 1, open_high=True), group='model')

  # Data.
  dataset: str = setting('cifar10', "TFDS name, 'sklearn_digits' or 'folder:<root>'", group='data')
  data_dir: str | None = setting(None, 'TFDS data_dir (a local path or gs://)', group='data', training=False)
  train_split: str = setting('train', 'the split trained on (TFDS slicing allowed)', group='data')
  label_key: str = setting('label', "TFDS feature with the labels ('labels' for multi-label data)", group='data')
  eval_split: str | None = setting(None, "the split evaluated; None: 'validation' for ImageNet, else 'test'", group='data')
  skip_corrupt: bool = setting(False, 'image folders: leave out (and list) unreadable images', group='data', training=False)
  classes: tuple[int, ...] | None = setting(None, 'keep these classes only, relabelled 0..', NON_NEGATIVE, group='data')
  num_classes: int | None = setting(None, "the head's classes; None: the dataset's", integer(1), group='data')
  shots: int | None = setting(None, 'k training examples per class (nested in any k > it)', integer(1), group='data')
  fraction: float | None = setting(None, 'a stratified fraction of the training set (20% inside 40% ...)', number(0, 1, open_low=True), group='data')
  subset_seed: int = setting(0, 'which subset shots, fraction and val_fraction draw', integer(0), group='data')
  val_fraction: float | None = setting(None, 'held out of the training set for validation (plateau, early stopping)', number(0, 1, open_low=True, open_high=True), group='data')
  preprocess: str = setting('bit', "'bit' (resize, random crop, flip), 'inception' or 'none' (resize to crop, no augmentation)", one_of(*PREPROCESSINGS), group='data')
  resize: int | None = setting(None, 'training images are resized to this; None: HyperRule (160 or 512)', integer(1), group='data')
  crop: int | None = setting(None, 'and cropped to this; None: HyperRule (128 or 480)', integer(1), group='data')
  data_shards: int | None = setting(None, 'input shards, a multiple of the processes; None: one per process', integer(1), group='data')

  # Optimisation (BiT-HyperRule defaults).
  batch_size: int = setting(512, 'examples per step, over all devices', integer(1), group='optimisation')
  batch_split: int = setting(1, 'gradient accumulation: micro-batches per step', integer(1), group='optimisation')
  base_lr: float = setting(0.003, 'the official BiT learning rate, at any batch size', number(0, open_low=True), group='optimisation')
  lr_scaling: str = setting('none', "'none' or 'linear' (lr = base_lr * batch_size / base_batch)", one_of(*LR_SCALINGS), group='optimisation')
  base_batch: int = setting(512, "the batch of base_lr, for lr_scaling='linear' only", integer(1), group='optimisation')
  lr: float | None = setting(None, 'the peak learning rate; None: base_lr (scaled if asked)', number(0, open_low=True), group='optimisation')
  momentum: float = setting(0.9, 'SGD momentum', number(0, 1, open_high=True), group='optimisation')
  weight_decay: float = setting(0.0, 'coupled weight decay, on kernels only', number(0), group='optimisation')
  mixup_alpha: float | None = setting(None, 'MixUp Beta(alpha, alpha); None: HyperRule (0 below 20k examples, else 0.1)', number(0), group='optimisation')
  freeze: str = setting('', "parameters not trained: a regex over their paths, e.g. 'root_block|block1'", REGEX, group='optimisation')
  reinit: str = setting('', 'parameters that start from the scratch initialiser while the rest load from init (Soekhoe et al.; bit_jax/models/layers.py)', REGEX, group='optimisation')
  loss: str = setting('softmax', "'softmax' or 'sigmoid' (multi-label)", one_of(*LOSSES), group='optimisation')

  # The schedule.
  lr_schedule: str = setting('hyperrule', "'hyperrule', 'constant', 'plateau' or 'step' (bit_jax/recipe/hyperrule.py)", one_of(*LR_SCHEDULES), group='schedule')
  total_steps: int | None = setting(None, 'the phase length; None: HyperRule (500, 10k or 20k by examples) or epochs', integer(0), group='schedule')
  epochs: float | None = setting(None, 'the phase length in epochs, instead of total_steps', number(0, open_low=True), group='schedule')
  warmup_steps: int | None = setting(None, 'linear warmup from 0; None: HyperRule, scaled to total_steps', integer(0), group='schedule')
  decay_steps: tuple[int, ...] | None = setting(None, 'steps after which the lr decays; None: HyperRule, scaled to total_steps', NON_NEGATIVE, group='schedule')
  warmup_epochs: float | None = setting(None, 'warmup in epochs, instead of warmup_steps', number(0), group='schedule')
  decay_epochs: tuple[float, ...] | None = setting(None, 'decays in epochs, instead of decay_steps', NON_NEGATIVE, group='schedule')
  decay_factor: float = setting(0.1, "the lr factor of lr_schedule='step' at each decay ('hyperrule' divides by 10)", number(0, 1, open_low=True), group='schedule')
  plateau_patience: int = setting(3, 'evaluations without a better monitor before lr *= plateau_factor', integer(1), group='schedule')
  plateau_factor: float = setting(0.1, 'the lr factor of a plateau', number(0, 1, open_low=True), group='schedule')
  early_stopping_patience: int | None = setting(None, 'evaluations without a better monitor before the phase stops; None: never', integer(1), group='schedule')
  monitor: str = setting('val_loss', 'what plateau and early stopping watch (needs val_fraction)', one_of(*MONITOR_MODES), group='schedule')

  # Few-shot linear probe of the pre-logits at every evaluation (bit_jax/training/linear_probe.py).
  fewshot_shots: tuple[int, ...] = setting((), 'e.g. (1, 5, 10); () turns the probe off', NON_NEGATIVE, group='few-shot probe', training=False)
  fewshot_dataset: str | None = setting(None, "the probe's dataset; None: the phase's", group='few-shot probe', training=False)
  fewshot_classes: tuple[int, ...] | None = setting(None, 'its classes, e.g. classes not trained on', NON_NEGATIVE, group='few-shot probe', training=False)
  fewshot_l2: float = setting(1024.0, "the probe's L2 regularisation", number(0, open_low=True), group='few-shot probe', training=False)

  # Bookkeeping.
  seed: int = setting(0, 'initialisation, shuffling, MixUp and dropout', integer(0), group='bookkeeping')
  log_every: int = setting(10, 'steps between progress lines and training metrics', integer(1), group='bookkeeping', training=False)
  eval_every: int = setting(100, 'steps between evaluations; 0: only at the end of each phase', integer(0), group='bookkeeping', training=False)
  eval_batch_size: int | None = setting(None, 'the evaluation batch; None: batch_size', integer(1), group='bookkeeping', training=False)
  checkpoint_every: int = setting(100, 'steps between checkpoints; 0: only at the end of each phase', integer(0), group='bookkeeping', training=False)
  keep_checkpoints: int = setting(2, 'checkpoints kept', integer(1), group='bookkeeping', training=False)

  # Set for each phase while it is resolved.
  name: str = setting('phase0', "the phase's name in logs, metrics and files; 'phase<index>' unless a phase sets it", group='set by the plan', by='phase')
  index: int = setting(0, 'its place in the run, from 0', integer(0), group='set by the plan', by='plan')
  num_examples: int | None = setting(None, 'training examples after subsets and the holdout', integer(0), group='set by the plan', by='plan')
  multi_label: bool = setting(False, 'the dataset has several labels per example', group='set by the plan', by='plan')
  architecture: str | None = setting(None, 'the ResNet-V2 trained, e.g. R50x1', group='set by the plan', by='plan')
  data_digest: str | None = setting(None, 'a hash of the training and validation example ids', group='set by the plan', by='plan')
  derived: tuple[str, ...] = setting((), 'the fields the plan derived (not given)', group='set by the plan', by='plan', training=False)
# fmt: on


FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(PhaseSettings)
NAMES = tuple(f.name for f in FIELDS)
CONFIG_FIELDS = tuple(f.name for f in FIELDS if f.metadata['by'] == 'config')
TRAINING_FIELDS = tuple(f.name for f in FIELDS if f.metadata['training'])
_TYPES = typing.get_type_hints(PhaseSettings)


def _without_none(name: str):
  annotation = _TYPES[name]
  if isinstance(annotation, types.UnionType):
    return next(a for a in typing.get_args(annotation) if a is not type(None))
  return annotation


def value_type(name: str) -> type:
  """The field's type without None: str, int, float, bool or tuple."""
  annotation = _without_none(name)
  return typing.get_origin(annotation) or annotation


def optional(name: str) -> bool:
  """None allowed: the plan derives the field when it is unset."""
  annotation = _TYPES[name]
  return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


def _is(value, kind: type) -> bool:
  if kind in (int, float) and isinstance(value, bool):
    return False
  return isinstance(value, (int, float) if kind is float else kind)


def has_type(name: str, value) -> bool:
  """`value` is of the field's type (a tuple's elements too; a list passes as a tuple)."""
  kind = value_type(name)
  if kind is not tuple:
    return _is(value, kind)
  element = typing.get_args(_without_none(name))[0]
  return isinstance(value, (tuple, list)) and all(_is(v, element) for v in value)


def problems(s: PhaseSettings) -> list[str]:
  """Every value of the wrong type or out of range, and the combinations that cannot work."""
  found = []
  for f in FIELDS:
    value = getattr(s, f.name)
    if value is None and optional(f.name):
      continue
    allowed, kind = f.metadata['allowed'], value_type(f.name)
    if not has_type(f.name, value) or (allowed and not allowed.ok(value)):
      words = allowed.words if allowed else f'a {kind.__name__}'
      why = allowed.why(value) if allowed and allowed.why and has_type(f.name, value) else ''
      found.append(f'{f.name}={value!r} ({why or "expected " + words})')
  if s.shots and s.fraction:
    found.append(f'shots={s.shots} and fraction={s.fraction} (set one of them)')
  if (s.lr_schedule == 'plateau' or s.early_stopping_patience) and not s.val_fraction:
    # Without a holdout there is no `monitor` metric: the rule would silently never act.
    found.append(
      f'lr_schedule={s.lr_schedule!r}, early_stopping_patience={s.early_stopping_patience} '
      f'watch {s.monitor}, which needs val_fraction'
    )
  return found


def from_values(values: dict) -> PhaseSettings:
  """Settings from a config's values (lists become tuples); a name that is no field is an
  error (the config's own check names the fields first)."""
  unknown = sorted(set(values) - set(NAMES))
  if unknown:
    raise ValueError(f'Not settings of a phase: {unknown}.')
  as_tuple = lambda v: tuple(v) if isinstance(v, list) else v
  return PhaseSettings(**{k: as_tuple(v) for k, v in values.items()})


def record(settings: PhaseSettings) -> dict:
  """The settings as JSON types, field by field (phases.json, the checkpoint's plan)."""
  as_json = lambda v: list(v) if isinstance(v, tuple) else v
  return {f.name: as_json(getattr(settings, f.name)) for f in FIELDS}


def _shown(value) -> str:
  if isinstance(value, float):
    text = f'{value:.6g}'
    return text if any(c in text for c in '.en') else text + '.0'
  if isinstance(value, tuple):
    return '(' + ', '.join(map(_shown, value)) + ')'
  return repr(value) if isinstance(value, str) else str(value)


def rows(phases: list[PhaseSettings]) -> str:
  """Every field of every phase, one line per field, one column per phase (`--dry_run`)."""
  table = [('field', *(p.name for p in phases))]
  for group in GROUPS:
    table += [
      (f.name, *(_shown(getattr(p, f.name)) for p in phases))
      for f in FIELDS
      if f.metadata['group'] == group
    ]
  widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)


def markdown() -> str:
  """README's field list: every field by group, with its default, values and meaning."""
  lines = []
  for group in GROUPS:
    lines += [
      f'**{group.capitalize()}**',
      '',
      '| field | default | values | meaning |',
      '|---|---|---|---|',
    ]
    for f in FIELDS:
      if f.metadata['group'] != group:
        continue
      allowed = f.metadata['allowed']
      values = value_type(f.name).__name__ + (f', {allowed.words}' if allowed else '')
      resume = '' if f.metadata['training'] else ' (a resume may change it)'
      meaning = f.metadata['meaning'].replace('|', '\\|').replace('<', '\\<') + resume
      lines.append(f'| `{f.name}` | `{_shown(f.default)}` | {values} | {meaning} |')
    lines.append('')
  return '\n'.join(lines).rstrip() + '\n'
