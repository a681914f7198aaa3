"""Config -> plan: every phase of a run resolved and checked before step 1.

A run is a list of phases. The top-level config holds the defaults (bit_jax/recipe/defaults.py);
`config.phases` is a sequence of dicts, each overriding some fields for one phase (data
subset, batch size, learning rate, steps, frozen parameters, init). A plain HyperRule run has
no `phases` and is one phase. Fields left unset (None) are resolved here, for each phase's
own data:

* `lr`: `base_lr` (0.003, the official value at any batch size), or with
  `lr_scaling='linear'` `base_lr * batch_size / base_batch`;
* `total_steps`, `warmup_steps`, `decay_steps`: the HyperRule schedule of the phase's number
  of training examples; when `epochs` or `total_steps` fixes another length, the HyperRule's
  boundaries are scaled to it (same shape, other length); `warmup_epochs`/`decay_epochs`
  give them in epochs instead (upstream pre-training);
* `mixup_alpha`; `resize`/`crop` from the image size; `eval_split` ('validation' for
  ImageNet, whose 'test' has no labels); `num_classes` from the data;
* `head`: 'reset' (a fresh zero head) when a phase starts from a checkpoint or from the
  previous phase's weights on another task, 'keep' when it continues the same task.

Everything a user can get wrong is checked here, for every phase, before anything trains:
field types and ranges and top-level settings that a phase would override (fields.py), the
data (splits, subset sizes, eval labels, crop <= resize, enough examples for the shards), the
init (exists, fits, is the `model` given; the first phase's is loaded, a published one
fetched), the freeze regex, and batch sizes against devices and processes. A problem raises
`ConfigError` naming the phase. The `Plan` is an immutable value: `records()` is what
phases.json stores, `table()` what `--dry_run` prints.
"""

import dataclasses
import hashlib
from collections.abc import Collection

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bit_jax import models
from bit_jax.data import data_sources, dataset_names, subsets
from bit_jax.models import pretrained
from bit_jax.recipe import fields, hyperrule, optim, settings
from bit_jax.recipe.settings import PhaseSettings
from bit_jax.runtime.errors import ConfigError

# How many labels of a large eval split are read to check them before training.
EVAL_LABEL_SAMPLE = 256


@dataclasses.dataclass(frozen=True)
class PhaseData:
  train: data_sources.DataSource
  eval: data_sources.DataSource
  train_ids: np.ndarray  # the training examples (a subset, minus the holdout)
  val_ids: np.ndarray | None  # held out of `train` for validation, or None


@dataclasses.dataclass(frozen=True)
class Phase:
  """One resolved phase: every field decided (`settings`), its model and its data."""

  index: int
  settings: PhaseSettings
  architecture: models.Architecture
  data: PhaseData
  notes: tuple[str, ...] = ()  # printed at the start of the phase

  @property
  def name(self) -> str:
    return self.settings.name

  def model(self, num_classes: int | None = -1):
    """The phase's model (its own head size unless `num_classes` is given)."""
    s = self.settings
    return self.architecture.model(
      s.num_classes if num_classes == -1 else num_classes,
      dtype=jnp.dtype(s.dtype),
      ops=s.ops,
      dropout=s.dropout,
    )


@dataclasses.dataclass(frozen=True)
class Plan:
  phases: tuple[Phase, ...]
  data_shards: int  # input shards: a multiple of the processes

  def records(self) -> list[dict]:
    """Every resolved value of every phase, as JSON types (phases.json)."""
    return [settings.record(p.settings) for p in self.phases]

  def settings_table(self) -> str:
    """Every field of every phase (`--dry_run`): one row per field, one column per phase."""
    return settings.rows([p.settings for p in self.phases])

  def table(self) -> str:
    """One row per phase: what the HyperRule and the defaults picked."""
    columns = (
      'phase',
      'data',
      'examples',
      'steps',
      'batch',
      'lr',
      'res',
      'mixup',
      'init',
      'head',
      'freeze',
    )
    rows = [columns] + [_row(p) for p in self.phases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _row(phase: Phase) -> tuple[str, ...]:
  s = phase.settings
  subset = f', {s.shots}/class' if s.shots else f', {s.fraction:.0%}' if s.fraction else ''
  classes = f'[{",".join(map(str, s.classes))}]' if s.classes else ''
  holdout = f' (-{len(phase.data.val_ids)} val)' if phase.data.val_ids is not None else ''
  init = s.init if len(s.init) <= 30 else '...' + s.init[-27:]
  return (
    s.name,
    f'{s.dataset}{classes}/{s.train_split}{subset} -> {s.eval_split}',
    f'{s.num_examples}{holdout}',
    str(s.total_steps),
    str(s.batch_size),
    f'{s.lr:.4g} {_schedule(s)}',
    f'{s.resize}->{s.crop}' + (' no aug' if s.preprocess == 'none' else ''),
    f'{s.mixup_alpha:g}' + (f' dropout {s.dropout:g}' if s.dropout else ''),
    f'{init} ({phase.architecture.name})',
    s.head,
    repr(s.freeze) + (f' reinit {s.reinit!r}' if s.reinit else ''),
  )


def _schedule(s) -> str:
  """The schedule's name, with what it decays at or watches where that is not the default."""
  text = s.lr_schedule
  if s.lr_schedule == 'step':
    text += f' x{s.decay_factor:g} at {list(s.decay_steps)}'
  if s.lr_schedule == 'plateau' or s.early_stopping_patience:
    text += f' on {s.monitor}'
  return text


# --- resolving one phase -----------------------------------------------------------------


def _sources(s) -> tuple[data_sources.DataSource, data_sources.DataSource]:
  splits = {}
  for split in dict.fromkeys((s.train_split, s.eval_split)):
    try:
      splits[split] = data_sources.get_source(
        s.dataset,
        split,
        data_dir=s.data_dir,
        classes=s.classes,
        label_key=s.label_key,
        skip_corrupt=s.skip_corrupt,
      )
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
      raise ConfigError(
        f'cannot load dataset {s.dataset!r} split {split!r} (data_dir {s.data_dir!r}): {e}'
      ) from None
  return splits[s.train_split], splits[s.eval_split]


def _training_ids(s, source) -> tuple[np.ndarray, np.ndarray | None]:
  """(training ids, validation ids or None); labels are read only when a subset needs them."""
  if not (s.shots or s.fraction or s.val_fraction):
    return np.arange(source.num_examples, dtype=np.int64), None
  if source.multi_label:
    raise ConfigError(
      f'{source.name} has several labels per example; shots, fraction and '
      f'val_fraction need one. Train on the whole split.'
    )
  labels = source.labels()
  candidates, val_ids = None, None
  if s.val_fraction:
    candidates, val_ids = subsets.holdout_split(labels, s.subset_seed, val_fraction=s.val_fraction)
  if s.shots:
    ids = subsets.per_class(labels, s.shots, s.subset_seed, within=candidates)
  elif s.fraction:
    ids = subsets.fraction(labels, s.fraction, s.subset_seed, within=candidates)
  else:
    ids = candidates
  return ids, val_ids


def _check_labels(s, train, evaluate, num_classes, ids) -> None:
  """Training classes that never occur, and eval labels outside [0, num_classes), are refused
  (a TFDS split without labels marks them -1, and would evaluate to 0.0)."""
  if train.labels_in_memory and not train.multi_label:
    counts = np.bincount(train.labels()[ids], minlength=train.num_classes)
    absent = np.flatnonzero(counts == 0)
    if len(absent) and not (s.shots or s.fraction):
      names = [train.class_names[c] if train.class_names else str(c) for c in absent[:10]]
      raise ConfigError(
        f'{train.name} has no training images of class {", ".join(names)}; '
        f'a class never trained on cannot be learnt. Add images or keep '
        f'only the classes present (classes=...).'
      )
  if evaluate.multi_label:
    return
  if evaluate.labels_in_memory:
    labels = evaluate.labels()
  else:
    sample = evaluate.undecoded_records().take(EVAL_LABEL_SAMPLE).map(lambda r: r['label'])
    labels = np.array(list(sample.as_numpy_iterator()), np.int64)
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if len(bad):
    raise ConfigError(
      f'eval split {s.eval_split!r} of {s.dataset} has labels outside [0, {num_classes}) '
      f'(e.g. {bad[0]}): it has no usable labels, so every accuracy would be 0. Evaluate '
      f'on a labelled split, e.g. --config.eval_split=validation.'
    )


def _image_hw(s, source) -> tuple[int, int] | None:
  if s.resize is not None and s.crop is not None:
    return None
  image_hw = hyperrule.image_size(s.dataset, s.data_dir)
  if image_hw is None:  # unknown dataset: read the size from the data, as the HyperRule needs it
    image_hw = hyperrule.image_size_from_examples(
      r['image'] for r in source.records().take(256).as_numpy_iterator()
    )
  return image_hw


def _task(s) -> tuple:
  return (s.dataset, s.train_split, tuple(s.classes or ()), s.label_key, s.num_classes)


def _given_architecture(s) -> models.Architecture | None:
  if s.model is None:
    return None
  try:
    return models.Architecture.from_name(s.model)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _architecture_and_head(s, previous: Phase | None) -> tuple[models.Architecture, str]:
  """The phase's architecture (the one `model` names, which must be the one it starts from;
  unset: that one) and its head rule, checked against what it starts from."""
  given = _given_architecture(s)
  if s.init == 'scratch':
    if s.head == 'keep':
      raise ConfigError("head='keep' but init='scratch': there is no head to keep.")
    if given is None:
      raise ConfigError("init='scratch' needs a model, e.g. --config.model=R50x1.")
    return given, 'new'
  architecture, head = _started_from(s, previous)
  if given is not None and given != architecture:
    source = 'the previous phase' if s.init == 'previous' else s.init
    raise ConfigError(
      f'model={s.model!r} ({given.name}) but init={source} is {architecture.name}: the '
      f'weights decide the architecture. Set --config.model={architecture.name}, leave '
      f"model unset (None: the init's), or train from init=scratch."
    )
  return architecture, head


def _started_from(s, previous: Phase | None) -> tuple[models.Architecture, str]:
  """The architecture and head rule of a phase that starts from other weights."""
  if s.init == 'previous':
    if previous is None:
      raise ConfigError('init="previous" but this is the first phase.')
    same_task = _task(s) == _task(previous.settings)
    head = s.head or ('keep' if same_task else 'reset')
    if head == 'keep' and s.num_classes != previous.settings.num_classes:
      raise ConfigError(
        f"head='keep' but the previous phase's head has "
        f'{previous.settings.num_classes} classes and this one needs '
        f'{s.num_classes}.'
      )
    return previous.architecture, head
  try:
    if s.index == 0:  # what the run needs first is loaded now, not once the workdir is written
      pretrained.read_located(s.init)
    architecture, head_classes = pretrained.describe(s.init)
    if s.head == 'keep' and head_classes != s.num_classes:
      raise ConfigError(
        f"head='keep' but {s.init} has a head of {head_classes} classes and "
        f'the task has {s.num_classes}.'
      )
    if pretrained.detect_format(s.init) == 'npz' and s.init not in models.KNOWN_MODELS:
      shapes = pretrained.npz_shapes(s.init)
      pretrained.check_fit(shapes, architecture.model(s.num_classes), s.head == 'keep')
  except (FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
    raise ConfigError(f'cannot use init={s.init!r}: {e}') from None
  return architecture, s.head or 'reset'


def _check_reinit(s, model) -> None:
  if not s.reinit:
    return
  if s.init == 'scratch':
    raise ConfigError(f"reinit={s.reinit!r} but init='scratch': everything is new already.")
  try:
    optim.frozen_mask(models.param_shapes(model), s.reinit, field='reinit')
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _freeze_note(s, model) -> str | None:
  _check_reinit(s, model)
  if not s.freeze:
    return None
  try:
    mask = jax.tree.leaves(optim.frozen_mask(models.param_shapes(model), s.freeze))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if all(mask):
    return f'freeze={s.freeze!r} matches every parameter: nothing trains in this phase.'
  return None


def _check_pipeline(s, num_ids: int, data_shards: int) -> None:
  """What the input pipeline would refuse at the phase's start, refused now."""
  if s.preprocess == 'bit' and s.crop > s.resize:
    raise ConfigError(
      f"crop={s.crop} is larger than resize={s.resize}: 'bit' preprocessing resizes to "
      f'resize, then crops crop out of it. Use crop <= resize (BiT-HyperRule: 160 -> 128, '
      f'512 -> 480).'
    )
  if num_ids < data_shards:
    raise ConfigError(
      f'{num_ids} training examples cannot fill {data_shards} data shards (one per '
      f'process by default); use more examples or fewer shards.'
    )


def _check_batches(s, device_count: int, data_shards: int) -> None:
  if s.batch_size % device_count:
    raise ConfigError(
      f'batch_size={s.batch_size} does not divide over {device_count} '
      f'devices; use a multiple of {device_count}.'
    )
  if s.batch_size % (s.batch_split * data_shards):
    raise ConfigError(
      f'batch_size={s.batch_size} must be a multiple of batch_split '
      f'({s.batch_split}) times data_shards ({data_shards}).'
    )
  eval_batch = s.eval_batch_size or s.batch_size
  if eval_batch % device_count:
    raise ConfigError(
      f'eval batch {eval_batch} does not divide over {device_count} devices; '
      f'set eval_batch_size to a multiple of {device_count}.'
    )


def _check_fewshot(s) -> None:
  if not s.fewshot_shots:
    return
  dataset = s.fewshot_dataset or s.dataset
  try:
    source = data_sources.get_source(
      dataset, s.train_split, data_dir=s.data_dir, classes=s.fewshot_classes
    )
    if source.multi_label:
      raise ValueError('the probe needs one label per example')
    subsets.per_class(source.labels(), max(s.fewshot_shots), s.subset_seed)
  except (ValueError, FileNotFoundError, OSError) as e:
    raise ConfigError(f'few-shot probe on {dataset!r}: {e}') from None


def _ids_digest(*ids) -> str:
  digest = hashlib.sha1()
  for part in ids:
    digest.update(b'-' if part is None else np.asarray(part, np.int64).tobytes())
  return digest.hexdigest()[:16]


def resolve_phase(
  s: PhaseSettings, previous: Phase | None, *, device_count: int, data_shards: int
) -> Phase:
  """One phase's settings as given -> the phase with every field decided and checked."""
  fields.check(s)
  unset = [k for k in settings.CONFIG_FIELDS if getattr(s, k) is None]
  if s.eval_split is None:
    s = dataclasses.replace(s, eval_split=dataset_names.default_eval_split(s.dataset))
  train, evaluate = _sources(s)
  if train.multi_label and s.loss != 'sigmoid':
    raise ConfigError(
      f"{train.name} has several labels per example: use loss='sigmoid' "
      f'(independent binary losses), as BiT-M does on ImageNet-21k.'
    )
  ids, val_ids = _training_ids(s, train)
  num_classes = s.num_classes or train.num_classes
  if num_classes < train.num_classes:
    raise ConfigError(f'num_classes={num_classes} but {train.name} has {train.num_classes}.')
  _check_labels(s, train, evaluate, num_classes, ids)
  s = hyperrule.fill(
    s, num_examples=len(ids), image_hw=_image_hw(s, train), num_classes=train.num_classes
  )
  if s.total_steps and s.lr_schedule == 'hyperrule':
    hyperrule.Schedule(s.warmup_steps, s.decay_steps, s.total_steps)  # in order?
  architecture, head = _architecture_and_head(s, previous)
  s = dataclasses.replace(
    s,
    head=head,
    model=s.model or architecture.name,
    multi_label=train.multi_label,
    architecture=architecture.name,
    data_digest=_ids_digest(ids, val_ids),
  )
  s = dataclasses.replace(s, derived=tuple(k for k in unset if getattr(s, k) is not None))
  _check_pipeline(s, len(ids), data_shards)
  _check_batches(s, device_count, data_shards)
  _check_fewshot(s)
  phase = Phase(s.index, s, architecture, PhaseData(train, evaluate, ids, val_ids))
  note = _freeze_note(s, phase.model())
  return dataclasses.replace(phase, notes=(note,) if note else ())


def resolve(
  config: ml_collections.ConfigDict,
  *,
  device_count: int | None = None,
  process_count: int | None = None,
  given: Collection[str] = (),
  shared_top: bool = False,
) -> Plan:
  """The checked plan of `config` on this machine's devices and processes. `given`: the
  top-level fields set on the command line, refused where a phase would override them;
  `shared_top`: the top level is a base other runs share (see `fields.check_reach`)."""
  device_count = device_count or jax.device_count()
  process_count = process_count or jax.process_count()
  data_shards = config.get('data_shards') or process_count
  if data_shards % process_count:
    raise ConfigError(
      f'data_shards={data_shards} must be a multiple of the {process_count} processes.'
    )
  phases = []
  for s in fields.phase_settings(config, given, shared_top=shared_top):
    try:
      phases.append(
        resolve_phase(
          s, phases[-1] if phases else None, device_count=device_count, data_shards=data_shards
        )
      )
    except ConfigError as e:
      raise ConfigError(
        f'Phase {s.name}: {e}' if not str(e).startswith('Phase ') else str(e)
      ) from None
    except ValueError as e:  # subsets, the HyperRule schedule, the pipeline's checks
      raise ConfigError(f'Phase {s.name}: {e}') from None
  return Plan(tuple(phases), data_shards)
