"""A config's phases: the top level merged with each phase's overrides into the settings of
each phase (bit_jax/recipe/settings.py), checked, and two resolved plans compared.

The top level of a config holds the defaults (bit_jax/recipe/defaults.py); `config.phases` is a
sequence of dicts, each overriding some fields for one phase. `check_reach` refuses a
top-level setting that a phase would silently override (`with_phase_overrides` sets one
phase's field instead); `check` lists every problem of a phase at once; `changes` says which
fields of a resumed run's plan differ from the plan it was trained with.
"""

import ast
import difflib
from collections.abc import Collection, Sequence

import ml_collections

from bit_jax.recipe import settings
from bit_jax.recipe.settings import PhaseSettings
from bit_jax.runtime.errors import ConfigError

PHASE_ONLY_FIELDS = tuple(f.name for f in settings.FIELDS if f.metadata['by'] == 'phase')


def phase_settings(
  config: ml_collections.ConfigDict, given: Collection[str] = (), *, shared_top: bool = False
) -> list[PhaseSettings]:
  """Each phase's settings as given: the top level updated with the phase's overrides (None
  where the plan derives a value). `given`, `shared_top`: see `check_reach`."""
  base = config.to_dict()
  overrides = base.pop('phases', None) or [{}]
  unknown = sorted(set(base) - set(settings.CONFIG_FIELDS))
  if unknown:
    raise ConfigError(
      f'The config sets unknown fields {unknown}; the nearest are '
      f'{", ".join(difflib.get_close_matches(unknown[0], settings.CONFIG_FIELDS, 3, 0))} '
      f'(every field: README.md, "Config fields").'
    )
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
    phases.append(
      settings.from_values(
        {
          **base,
          'name': f'phase{index}',
          'index': index,
          'init': base['init'] if index == 0 else 'previous',
          **override,
        }
      )
    )
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
  default = {f.name: f.default for f in settings.FIELDS}
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
        f'{", ".join(nearest)} (every field: README.md, "Config fields").'
      )
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    phases[names.index(name)][field] = value
  config = ml_collections.ConfigDict(config.to_dict())
  config.phases = tuple(phases)
  return config


def check(phase: PhaseSettings) -> None:
  """Every field of the right type and in range, all problems listed at once."""
  problems = settings.problems(phase)
  if problems:
    raise ConfigError(f'Phase {phase.name}: ' + '; '.join(problems) + '.')


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
      k for k in set(old) | set(new) if k in settings.TRAINING_FIELDS and old.get(k) != new.get(k)
    )
    if differ:
      found[new.get('name', old.get('name'))] = [
        f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in differ
      ]
      derived = set(old.get('derived', ())) & set(new.get('derived', ()))
      given |= set(differ) - derived
  return found, given
