"""Config -> plan. Oracles: the official HyperRule table and BiT code (lr 0.003 at any batch,
ImageNet evaluated on 'validation', a fresh head for every new task), hand-computed schedules."""

import dataclasses
import math
import sys

import numpy as np
import pytest
from conftest import TEST_DATA

from bit_jax import models
from bit_jax.data import dataset_names
from bit_jax.recipe import defaults, fields, hyperrule, plan
from bit_jax.recipe.plateau import Plateau
from bit_jax.runtime.errors import ConfigError


def config(**top):
  c = defaults.base_config()
  c.update(top)
  return c


def test_plain_run_is_one_phase_filled_by_the_hyperrule():
  [phase] = fields.phase_settings(config())
  phase = hyperrule.fill(phase, num_examples=50_000, image_hw=(32, 32), num_classes=10)
  assert (phase.total_steps, phase.warmup_steps, tuple(phase.decay_steps)) == (
    10_000,
    500,
    (3000, 6000, 9000),
  )
  assert (phase.resize, phase.crop, phase.mixup_alpha, phase.num_classes) == (160, 128, 0.1, 10)
  assert phase.lr == pytest.approx(0.003)
  assert phase.init == 'BiT-M-R50x1'


def test_overrides_win_and_lr_is_official_at_any_batch():
  [phase] = fields.phase_settings(config(batch_size=128, mixup_alpha=0.0, crop=64, resize=72))
  phase = hyperrule.fill(phase, num_examples=1000, image_hw=(500, 400), num_classes=3)
  assert phase.lr == 0.003  # all three official implementations: never scaled
  assert (phase.resize, phase.crop, phase.mixup_alpha) == (72, 64, 0.0)
  assert phase.total_steps == 500


def test_epochs_scale_the_hyperrule_shape():
  [phase] = fields.phase_settings(config(epochs=2.0, batch_size=100))
  phase = hyperrule.fill(phase, num_examples=1000, image_hw=(32, 32), num_classes=10)
  assert phase.total_steps == 20  # 2 epochs of 1000 at batch 100
  assert (phase.warmup_steps, tuple(phase.decay_steps)) == (4, (8, 12, 16))  # 0.2/.4/.6/.8


def test_phases_inherit_and_carry_weights():
  c = config(
    phases=({'name': 'head', 'freeze': '^(?!head)', 'batch_size': 32}, {'name': 'all', 'lr': 0.01})
  )
  head, everything = fields.phase_settings(c)
  assert (head.name, head.init, head.freeze, head.batch_size) == (
    'head',
    'BiT-M-R50x1',
    '^(?!head)',
    32,
  )
  assert (everything.init, everything.freeze, everything.batch_size, everything.lr) == (
    'previous',
    '',
    512,
    0.01,
  )


def test_linear_scaling_only_when_asked_for():
  for batch in (32, 128, 512, 4096):
    [phase] = fields.phase_settings(config(batch_size=batch))
    filled = hyperrule.fill(phase, num_examples=1000, image_hw=(32, 32), num_classes=3)
    assert filled.lr == 0.003
    [phase] = fields.phase_settings(config(batch_size=batch, lr_scaling='linear'))
    filled = hyperrule.fill(phase, num_examples=1000, image_hw=(32, 32), num_classes=3)
    assert filled.lr == pytest.approx(0.003 * batch / 512)


def test_unknown_phase_field_is_an_error_that_lists_fields():
  with pytest.raises(ConfigError, match="unknown fields \\['batchsize'\\].*batch_size"):
    fields.phase_settings(config(phases=({'batchsize': 3},)))
  [phase] = fields.phase_settings(config(lr_schedule='cosine'))
  with pytest.raises(ConfigError, match='plateau'):
    fields.check(phase)


def test_learning_rate_kinds():
  [phase] = fields.phase_settings(
    config(lr=0.1, warmup_steps=10, decay_steps=(20,), total_steps=30)
  )
  phase = hyperrule.fill(phase, num_examples=100, image_hw=(32, 32), num_classes=2)
  assert [hyperrule.learning_rate(phase, s) for s in (0, 5, 10, 20, 21)] == pytest.approx(
    [0.0, 0.05, 0.1, 0.1, 0.01]
  )
  phase = dataclasses.replace(phase, lr_schedule='plateau')
  assert hyperrule.learning_rate(phase, 25, plateau_scale=0.1) == pytest.approx(0.01)


def test_plateau_reduces_then_stops():
  plateau = Plateau(patience=2, factor=0.5, stop_patience=3)
  assert not plateau.update(1.0)
  assert not plateau.update(1.1) and plateau.scale == 1.0
  assert not plateau.update(1.2) and plateau.scale == 0.5  # 2 evaluations without a better loss
  assert plateau.update(1.3)  # 3: stop
  restored = Plateau(**vars(plateau))  # checkpointed as JSON
  assert restored == plateau and math.isinf(Plateau(1, 0.1, None).best)


def test_upstream_schedule_in_epochs():
  [phase] = fields.phase_settings(
    config(
      epochs=90.0,
      warmup_epochs=1.0,
      decay_epochs=(30.0, 60.0, 80.0),
      batch_size=256,
      base_lr=0.03,
      base_batch=256,
      lr_scaling='linear',
    )
  )
  phase = hyperrule.fill(phase, num_examples=2560, image_hw=(224, 224), num_classes=1000)
  assert (phase.total_steps, phase.warmup_steps, tuple(phase.decay_steps)) == (
    900,
    10,
    (300, 600, 800),
  )
  assert phase.lr == pytest.approx(0.03)


# --- resolving whole runs: every phase checked before step 1 -----------------------------


def tiny(**overrides):
  from test_train import tiny_config

  return tiny_config(**overrides)


def test_imagenet_evaluates_on_validation_by_default():

  assert dataset_names.default_eval_split('imagenet2012') == 'validation'
  assert dataset_names.default_eval_split('imagenet2012:5.1.0') == 'validation'
  assert dataset_names.default_eval_split('imagenet2012_subset/1pct') == 'validation'
  assert dataset_names.default_eval_split('cifar10') == 'test'
  [phase] = plan.resolve(tiny()).phases
  assert phase.settings.eval_split == 'test'


def test_an_eval_split_without_labels_is_refused_before_training(tmp_path):
  import tfds_builders

  name = tfds_builders.prepare(tfds_builders.UnlabelledTest, tmp_path)
  config = tiny(dataset=name, data_dir=str(tmp_path), classes=None)
  with pytest.raises(
    ConfigError,
    match="eval split 'test' of unlabelled_test has labels "
    'outside \\[0, 3\\).*eval_split=validation',
  ):
    plan.resolve(config)
  config.eval_split = 'validation'
  [phase] = plan.resolve(config).phases
  assert (phase.settings.eval_split, phase.data.eval.num_examples) == ('validation', 9)


def test_every_phase_is_checked_before_the_first_trains(tmp_path):
  from bit_jax.training import run

  good = {'name': 'first', 'total_steps': 2}
  for late_mistake, message in [
    ({'name': 'late', 'shots': 500}, 'Phase late: .*class 0 has'),
    ({'name': 'late', 'freeze': 'blok1'}, "Phase late: freeze='blok1' matches no parameter"),
    ({'name': 'late', 'init': 'scratch', 'model': 'R51x1'}, 'Phase late: Unknown model'),
    ({'name': 'late', 'lr': -1.0}, r'Phase late: lr=-1.0 \(expected a number in \(0, inf\)'),
    ({'name': 'late', 'batch_size': 13}, 'Phase late: batch_size=13 does not divide'),
    ({'name': 'late', 'init': str(tmp_path / 'missing.npz')}, 'Phase late: cannot use init'),
  ]:
    workdir = tmp_path / late_mistake.get('init', 'x').replace('/', '_')[-20:]
    with pytest.raises(ConfigError, match=message):
      run.run(tiny(phases=(good, late_mistake)), workdir)
    assert list(workdir.iterdir()) == []  # checked writable, then nothing written or trained


def test_plan_table_shows_what_the_hyperrule_picked():
  table = plan.resolve(
    tiny(
      lr=None,
      total_steps=None,
      phases=({'name': 'head', 'freeze': '^(?!head/)'}, {'name': 'all', 'shots': 5}),
    )
  ).table()
  header, head, everything = table.splitlines()
  assert header.split() == 'phase data examples steps batch lr res mixup init head freeze'.split()
  assert '500' in head and '0.003 hyperrule' in head and '18->16' in head
  assert 'scratch (R14x0.5)' in head and "'^(?!head/)'" in head
  assert ', 5/class' in everything and ' 15 ' in everything and 'keep' in everything


def test_a_top_level_setting_that_a_phase_overrides_is_refused_not_ignored():
  two = ({'name': 'up', 'lr': 0.05, 'total_steps': 20}, {'name': 'down', 'total_steps': 30})
  # Given on the command line: refused wherever a phase sets it, naming the phases.
  with pytest.raises(ConfigError) as error:
    fields.phase_settings(config(lr=0.1, phases=two), given={'lr'})
  assert '--config.lr=0.1 does not reach phase up (0.05)' in str(error.value)
  assert '--phase=up.lr=0.1' in str(error.value)
  with pytest.raises(ConfigError, match=r'phases up \(20\), down \(30\)'):
    fields.phase_settings(config(total_steps=50, phases=two), given={'total_steps'})
  # At the top of a config (or through the API): refused when no phase can see it.
  with pytest.raises(ConfigError, match='total_steps=50 at the top of the config reaches no'):
    fields.phase_settings(config(total_steps=50, phases=two))
  # A sweep's base is shared by runs with and without phases: only what the run sets counts.
  fields.phase_settings(config(total_steps=50, phases=two), shared_top=True)
  with pytest.raises(ConfigError, match='--config.total_steps=50 does not reach'):
    fields.phase_settings(config(total_steps=50, phases=two), {'total_steps'}, shared_top=True)
  # A top-level value that some phase inherits, or that a phase repeats, takes effect.
  up, down = fields.phase_settings(config(lr=0.1, phases=two))
  assert (up.lr, down.lr) == (0.05, 0.1)
  up, down = fields.phase_settings(config(batch_size=64, phases=two), given={'batch_size'})
  assert up.batch_size == down.batch_size == 64
  # The per-phase override the message suggests lands in that phase only.
  overridden = fields.with_phase_overrides(config(phases=two), ['up.lr=0.1', 'down.freeze=^r'])
  up, down = fields.phase_settings(overridden, given=set())
  assert (up.lr, down.lr, up.freeze, down.freeze) == (0.1, None, '', '^r')
  with pytest.raises(ConfigError, match='one of up, down'):
    fields.with_phase_overrides(config(phases=two), ['middle.lr=0.1'])
  with pytest.raises(ConfigError, match="'learning_rate' is not a field; the nearest are "):
    fields.with_phase_overrides(config(phases=two), ['up.learning_rate=0.1'])


def test_model_and_an_init_of_another_architecture_are_refused():
  small = str(TEST_DATA / 'bit_small_official.npz')  # an R14x0.5
  with pytest.raises(ConfigError, match=r"model='R50x1' \(R50x1\) but init=.* is R14x0.5"):
    plan.resolve(tiny(init=small, model='R50x1', head='reset'))
  # Unset, the model is the checkpoint's, and the record says which.
  [phase] = plan.resolve(tiny(init=small, model=None)).phases
  assert (phase.architecture.name, phase.settings.model) == ('R14x0.5', 'R14x0.5')
  assert 'model' in phase.settings.derived
  with pytest.raises(ConfigError, match="init='scratch' needs a model"):
    plan.resolve(tiny(model=None))
  later = ({'name': 'a'}, {'name': 'b', 'model': 'R26x1'})  # previous weights are an R14x0.5
  with pytest.raises(ConfigError, match='Phase b: .*init=the previous phase is R14x0.5'):
    plan.resolve(tiny(phases=later))


def test_what_the_pipeline_and_the_first_phase_need_is_checked_by_the_plan(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match='crop=20 is larger than resize=18'):
    plan.resolve(tiny(crop=20, resize=18))
  plan.resolve(tiny(crop=20, resize=18, preprocess='inception'))  # no resize there
  with pytest.raises(ConfigError, match='3 training examples cannot fill 8 data shards'):
    plan.resolve(tiny(shots=1, data_shards=8, batch_size=16))
  objects = tmp_path / 'objects.npz'
  np.savez(objects, **{'resnet/root_block/standardized_conv2d/kernel': np.array([{}, 1])})
  for phases_ in ((), ({'name': 'a'}, {'name': 'b', 'init': str(objects)})):
    init = str(objects) if not phases_ else 'scratch'
    with pytest.raises(ConfigError, match='(Object arrays cannot be loaded|holds Python objects)'):
      plan.resolve(tiny(init=init, model=None if not phases_ else 'R14x0.5', phases=phases_))
  # A published name is fetched by the plan: an unreachable one is refused before any write.
  spec = dict(models.KNOWN_MODELS['BiT-S-R50x1'], url='http://127.0.0.1:9/BiT-S-R50x1.npz')
  monkeypatch.setitem(models.KNOWN_MODELS, 'BiT-S-R50x1', spec)
  monkeypatch.setenv('BIT_JAX_CACHE', str(tmp_path / 'cache'))
  with pytest.raises(ConfigError, match="cannot use init='BiT-S-R50x1': .*127.0.0.1:9"):
    plan.resolve(tiny(init='BiT-S-R50x1', model=None))


def test_a_pth_init_without_torch_is_one_line_naming_the_extra(tmp_path, monkeypatch):
  checkpoint = tmp_path / 'bit.pth'
  checkpoint.write_bytes(b'never unpickled')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  with pytest.raises(ConfigError) as error:
    plan.resolve(tiny(init=str(checkpoint), model=None))
  message = str(error.value)
  assert 'need torch, which is not installed' in message and '".[torch]"' in message
  assert '\n' not in message and error.value.__cause__ is None
