"""The phase schema (bit_jax/recipe/settings.py) is the one declaration of every field: the config's
defaults, `--dry_run`, phases.json, the resume comparison and README's field list all name the
same fields, and each field's declared values are the ones the checks enforce."""

import dataclasses
import sys
from pathlib import Path

import pytest
import tiny

from bit_jax.recipe import defaults, fields, hyperrule, plan, settings
from bit_jax.recipe.settings import PhaseSettings
from bit_jax.training import steps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import write_field_list  # noqa: E402


def test_config_defaults_are_the_schemas():
  config = defaults.base_config()
  assert sorted(set(config) - {'phases'}) == sorted(settings.CONFIG_FIELDS)
  for name in settings.CONFIG_FIELDS:
    declared = next(f for f in settings.FIELDS if f.name == name)
    assert config[name] == declared.default, name


def test_readme_field_list_is_the_schemas():
  readme = (ROOT / 'README.md').read_text()
  assert write_field_list.with_field_list(readme) == readme, (
    'README.md\'s "Config fields" differ from bit_jax/recipe/settings.py: run '
    'python tools/write_field_list.py'
  )
  listed = {line.split('`')[1] for line in readme.splitlines() if line.startswith('| `')}
  assert set(settings.NAMES) <= listed


def field_rows(printed: str, phase_names: list[str]) -> dict[str, list[str]]:
  """{field: its value in each phase} from the per-field table of `--dry_run`'s output, which
  must list every field of the schema, group by group (test_train.py runs the command)."""
  lines = printed.splitlines()
  header = next(i for i, line in enumerate(lines) if line.split() == ['field', *phase_names])
  table = lines[header + 1 : header + 1 + len(settings.NAMES)]
  assert [line.split()[0] for line in table] == [
    f.name for group in settings.GROUPS for f in settings.FIELDS if f.metadata['group'] == group
  ]
  return {line.split()[0]: line.split()[1:] for line in table}


def test_the_dry_run_table_holds_every_resolved_field_of_every_phase():
  config = tiny.get_config()
  config.phases = ({'name': 'head', 'freeze': '^(?!head/)'}, {'name': 'all'})
  resolved = plan.resolve(config)
  rows = field_rows(resolved.settings_table(), ['head', 'all'])
  assert rows['freeze'][0] == "'^(?!head/)'" and rows['init'] == ["'scratch'", "'previous'"]
  assert rows['total_steps'] == ['12', '12']
  assert rows['num_examples'] == [str(p.settings.num_examples) for p in resolved.phases]


def test_phases_json_records_every_field():
  record = settings.record(PhaseSettings(classes=(1, 2)))
  assert list(record) == list(settings.NAMES) and record['classes'] == [1, 2]
  assert settings.from_values(record) == PhaseSettings(classes=(1, 2))


def _changed(value):
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, str):
    return value + 'x'
  return [*(value or []), 7]


def test_a_resume_compares_exactly_the_fields_that_change_the_training():
  before = settings.record(PhaseSettings(lr=0.1, total_steps=10, num_examples=5))
  compared = set()
  for name in settings.NAMES:
    after = {**before, name: _changed(before[name])}
    found, _ = fields.changes([before], [after])
    if found:
      assert list(found.values()) == [[f'{name}: {before[name]!r} -> {after[name]!r}']]
      compared.add(name)
  assert compared == set(settings.TRAINING_FIELDS)
  assert {'log_every', 'eval_every', 'data_dir', 'ops'}.isdisjoint(compared)
  assert {'batch_size', 'lr', 'seed', 'data_digest', 'shots'} <= compared


@pytest.mark.parametrize(
  'name, bad',
  [
    ('batch_size', 0),
    ('batch_size', 2.0),
    ('lr', -0.1),
    ('momentum', 1.0),
    ('lr_schedule', 'cosine'),
    ('monitor', 'test_top1'),
    ('classes', (1, -2)),
    ('derived', (1,)),
    ('skip_corrupt', 'yes'),
    ('freeze', 'block(1'),
    ('dataset', 3),
  ],
)
def test_a_value_outside_its_declaration_is_refused(name, bad):
  assert settings.problems(PhaseSettings()) == []
  [problem] = settings.problems(dataclasses.replace(PhaseSettings(), **{name: bad}))
  assert problem.startswith(f'{name}={bad!r} (')


def test_optional_fields_are_those_the_plan_derives():
  assert settings.optional('lr') and settings.optional('shots') and not settings.optional('seed')
  assert settings.value_type('decay_steps') is tuple and settings.value_type('lr') is float
  unset = [n for n in settings.CONFIG_FIELDS if settings.optional(n)]
  assert {'lr', 'total_steps', 'warmup_steps', 'decay_steps', 'mixup_alpha', 'resize'} <= set(unset)


def test_declared_choices_are_the_ones_the_code_runs():
  assert set(steps.LOSSES) == set(settings.LOSSES)
  s = hyperrule.fill(
    PhaseSettings(lr=0.1, total_steps=20, val_fraction=0.1),
    num_examples=100,
    image_hw=(32, 32),
    num_classes=3,
  )
  for schedule in settings.LR_SCHEDULES:
    rates = [
      hyperrule.learning_rate(dataclasses.replace(s, lr_schedule=schedule), t) for t in (0, 10)
    ]
    assert rates[0] == 0.0 and rates[1] > 0, schedule
