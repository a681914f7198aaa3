"""The fields of a run's phases: the top-level config merged with each phase's overrides,
every field checked for type and range, and the comparison of two resolved plans.

The top level of a config holds the defaults (bit_jax/defaults.py); `config.phases` is a
sequence of dicts, each overriding some fields for one phase. `check_reach` refuses a
top-level setting that a phase would silently override (`with_phase_overrides` sets one
phase's field instead); `check_fields` lists every problem of a phase at once; `changes` says which fields of a resumed run's plan differ from
the plan it was trained with.
"""

import ast
import difflib
import math
import re
from collections.abc import Collection, Sequence

import ml_collections

from bit_jax import defaults, input_pipeline, metric_names, ops, schedules, steps
from bit_jax.errors import ConfigError

PHASE_ONLY_FIELDS = ('name',)
HEADS = ('reset', 'keep')


def phase_configs(
  config: ml_collections.ConfigDict, given: Collection[str] = (), *, shared_top: bool = False
) -> list[ml_collections.ConfigDict]:
  """One unlocked ConfigDict per phase: the top level updated with the phase's overrides.
  `given`, `shared_top`: see `check_reach`."""
  base = config.to_dict()
  overrides = base.pop('phases', None) or [{}]
  check_reach(base, [dict(o) for o in overrides], given, shared_top=shared_top)
  phases = []
  for index, override in enumerate(overrides):
    override = dict(override)
    unknown = sorted(set(override) - set(base) - set(PHASE_ONLY_FIELDS))
    if unknown:
      raise ConfigError(
        f'Phase {index} sets unknown fields {unknown}; phases may override '
        f'any top-level field: {", ".join(sorted(base))}.'
      )
    phase = ml_collections.ConfigDict(
      {
        **base,
        'name': f'phase{index}',
        'index': index,
        'init': base['init'] if index == 0 else 'previous',
      }
    )
    phase.update(override)
    phases.append(phase)
  return phases


def _same(a, b) -> bool:
  as_tuple = lambda v: tuple(v) if isinstance(v, list) else v
  return as_tuple(a) == as_tuple(b)


def _phase_name(index: int, override: dict) -> str:
  return override.get('name', f'phase{index}')


def check_reach(
  base: dict, overrides: list[dict], given: Collection[str], *, shared_top: bool = False
) -> None:
  """Refuse a top-level setting that some phase would silently override: a field `given` on
  the command line (or by a sweep's run) that a phase sets to another value, or a field the
  config sets at the top (not its default) that every phase it could reach sets itself,
  unless that top is a base that other runs share too (`shared_top`: a sweep's). (`init` at
  the top reaches the first phase only; later ones start from the previous phase.)"""
  if len(overrides) == 1 and not overrides[0]:
    return
  default = defaults.base_config().to_dict()
  problems = []
  for field in sorted(set(base) - {'phases'}):
    reachable = overrides[:1] if field == 'init' else overrides
    setters = [
      (_phase_name(i, o), o[field])
      for i, o in enumerate(reachable)
      if field in o and not _same(o[field], base[field])
    ]
    others = [o for o in reachable if field not in o or _same(o[field], base[field])]
    listing = ', '.join(f'{name} ({value!r})' for name, value in setters)
    if field in given and setters:
      per_phase = ' '.join(f'--phase={name}.{field}={base[field]!r}' for name, _ in setters)
      problems.append(
        f'--config.{field}={base[field]!r} does not reach {"phases" if len(setters) > 1 else "phase"} {listing}, which set '
        f'{field} themselves; set it per phase ({per_phase}) or change config.phases'
      )
    elif setters and not others and not shared_top and not _same(base[field], default.get(field)):
      problems.append(
        f'{field}={base[field]!r} at the top of the config reaches no phase: every phase '
        f'sets it ({listing}); remove it or set it in the phases'
      )
  if problems:
    raise ConfigError('; '.join(problems) + '.')


def with_phase_overrides(
  config: ml_collections.ConfigDict, assignments: Sequence[str]
) -> ml_collections.ConfigDict:
  """`config` with per-phase overrides, each '<phase name>.<field>=<value>' (a Python
  literal, or else a string), as the command line's --phase gives them."""
  if not assignments:
    return config
  phases = [dict(p) for p in config.phases]
  names = [_phase_name(i, p) for i, p in enumerate(phases)]
  for assignment in assignments:
    target, equals, text = assignment.partition('=')
    name, _, field = target.partition('.')
    if not equals or name not in names:
      raise ConfigError(
        f'--phase={assignment}: expected <phase>.<field>=<value> with <phase> one of '
        f'{", ".join(names) or "(this config has no phases)"}.'
      )
    if field not in config or field == 'phases':
      nearest = difflib.get_close_matches(field, [f for f in config if f != 'phases'], 3, 0)
      raise ConfigError(
        f'--phase={assignment}: {field!r} is not a field; the nearest are '
        f'{", ".join(nearest)} (every field: bit_jax/defaults.py).'
      )
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    phases[names.index(name)][field] = value
  config = ml_collections.ConfigDict(config.to_dict())
  config.phases = tuple(phases)
  return config


def _int(low, high=None):
  return (
    lambda v: (
      isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    )
  ), f'an integer >= {low}'


def _number(low, high=None, *, open_low=False, open_high=False):
  def check(v):
    return (
      isinstance(v, (int, float))
      and not isinstance(v, bool)
      and math.isfinite(v)
      and (v > low if open_low else v >= low)
      and (high is None or (v < high if open_high else v <= high))
    )

  interval = f'{"(" if open_low else "["}{low}, {high if high is not None else "inf"}' + (
    ')' if open_high or high is None else ']'
  )
  return check, f'a number in {interval}'


def _one_of(*choices):
  return (lambda v: v in choices), f'one of {choices}'


_OPTIONAL = (
  'eval_batch_size',
  'lr',
  'total_steps',
  'epochs',
  'warmup_steps',
  'warmup_epochs',
  'mixup_alpha',
  'shots',
  'fraction',
  'val_fraction',
  'resize',
  'crop',
  'early_stopping_patience',
  'num_classes',
  'data_shards',
  'head',
)
FIELD_CHECKS = {
  'batch_size': _int(1),
  'eval_batch_size': _int(1),
  'batch_split': _int(1),
  'base_lr': _number(0, open_low=True),
  'lr': _number(0, open_low=True),
  'base_batch': _int(1),
  'lr_scaling': _one_of('none', 'linear'),
  'lr_schedule': _one_of(*schedules.SCHEDULES),
  'total_steps': _int(0),
  'epochs': _number(0, open_low=True),
  'warmup_steps': _int(0),
  'warmup_epochs': _number(0),
  'mixup_alpha': _number(0),
  'momentum': _number(0, 1, open_high=True),
  'weight_decay': _number(0),
  'plateau_patience': _int(1),
  'plateau_factor': _number(0, 1, open_low=True),
  'monitor': _one_of(*metric_names.MONITOR_MODES),
  'decay_factor': _number(0, 1, open_low=True),
  'dropout': _number(0, 1, open_high=True),
  'early_stopping_patience': _int(1),
  'shots': _int(1),
  'fraction': _number(0, 1, open_low=True),
  'val_fraction': _number(0, 1, open_low=True, open_high=True),
  'resize': _int(1),
  'crop': _int(1),
  'num_classes': _int(1),
  'data_shards': _int(1),
  'preprocess': _one_of(*input_pipeline.PREPROCESSINGS),
  'loss': _one_of(*steps.LOSSES),
  'dtype': _one_of('float32', 'bfloat16'),
  'ops': _one_of(*ops.CHOICES),
  'head': _one_of(*HEADS),
  'seed': _int(0),
  'subset_seed': _int(0),
  'log_every': _int(1),
  'eval_every': _int(0),
  'checkpoint_every': _int(0),
  'keep_checkpoints': _int(1),
  'fewshot_l2': _number(0, open_low=True),
}


def check_fields(phase: ml_collections.ConfigDict) -> None:
  """Every field of the right type and in range, all problems listed at once."""
  problems = []
  for field, (ok, expected) in FIELD_CHECKS.items():
    value = phase[field]
    if value is None and field in _OPTIONAL:
      continue
    if not ok(value):
      problems.append(f'{field}={value!r} (expected {expected})')
  for field in ('decay_steps', 'decay_epochs', 'classes', 'fewshot_shots', 'fewshot_classes'):
    value = phase[field]
    if value is not None and (
      not isinstance(value, (tuple, list))
      or not all(isinstance(v, (int, float)) and v >= 0 for v in value)
    ):
      problems.append(f'{field}={value!r} (expected a tuple of numbers >= 0)')
  if phase.shots and phase.fraction:
    problems.append(f'shots={phase.shots} and fraction={phase.fraction} (set one of them)')
  for field in ('freeze', 'reinit'):
    try:
      re.compile(phase[field])
    except (re.error, TypeError) as e:
      problems.append(f'{field}={phase[field]!r} (not a regular expression: {e})')
  if (phase.lr_schedule == 'plateau' or phase.early_stopping_patience) and not phase.val_fraction:
    # Without a holdout there is no `monitor` metric: the rule would silently never act.
    problems.append(
      f'lr_schedule={phase.lr_schedule!r}, early_stopping_patience='
      f'{phase.early_stopping_patience} watch {phase.monitor}, which needs val_fraction'
    )
  if problems:
    raise ConfigError(f'Phase {phase.name}: ' + '; '.join(problems) + '.')


# Fields that only say how a run is watched or where its data lives; a resume may change them.
BOOKKEEPING_FIELDS = (
  'log_every',
  'eval_every',
  'checkpoint_every',
  'keep_checkpoints',
  'eval_batch_size',
  'fewshot_shots',
  'fewshot_dataset',
  'fewshot_classes',
  'fewshot_l2',
  'data_dir',
  'ops',
  'skip_corrupt',
)


def changes(before: list[dict], after: list[dict]) -> tuple[dict[str, list[str]], set[str]]:
  """Between two plans' records: ({phase name: ['field: old -> new', ...]} for every field
  that changes the training, the changed fields that the config sets in either plan). The
  others were derived (by the HyperRule, from the data) in both and follow from the rest."""
  found, given = {}, set()
  if len(before) != len(after):
    found['phases'] = [f'{len(before)} phases -> {len(after)}']
    given.add('phases')
  for old, new in zip(before, after):
    differ = sorted(
      k
      for k in set(old) | set(new)
      if k not in BOOKKEEPING_FIELDS + ('derived',) and old.get(k) != new.get(k)
    )
    if differ:
      found[new.get('name', old.get('name'))] = [
        f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in differ
      ]
      derived = set(old.get('derived', ())) & set(new.get('derived', ()))
      given |= set(differ) - derived
  return found, given
