"""Config -> phases. Oracles: the official HyperRule table, hand-computed schedules."""

import math

import pytest

from bit_jax import defaults, phases


def config(**top):
  c = defaults.base_config()
  c.update(top)
  return c


def test_plain_run_is_one_phase_filled_by_the_hyperrule():
  [phase] = phases.phase_configs(config())
  phase = phases.fill_from_hyperrule(phase, num_examples=50_000, image_hw=(32, 32),
                                     num_classes=10)
  assert (phase.total_steps, phase.warmup_steps, tuple(phase.decay_steps)) == (
      10_000, 500, (3000, 6000, 9000))
  assert (phase.resize, phase.crop, phase.mixup_alpha, phase.num_classes) == (160, 128, 0.1, 10)
  assert phase.lr == pytest.approx(0.003)
  assert phase.init == 'BiT-M-R50x1'


def test_overrides_win_and_batch_scales_lr():
  [phase] = phases.phase_configs(config(batch_size=128, mixup_alpha=0.0, crop=64, resize=72))
  phase = phases.fill_from_hyperrule(phase, num_examples=1000, image_hw=(500, 400),
                                     num_classes=3)
  assert phase.lr == pytest.approx(0.003 * 128 / 512)
  assert (phase.resize, phase.crop, phase.mixup_alpha) == (72, 64, 0.0)
  assert phase.total_steps == 500


def test_epochs_scale_the_hyperrule_shape():
  [phase] = phases.phase_configs(config(epochs=2.0, batch_size=100))
  phase = phases.fill_from_hyperrule(phase, num_examples=1000, image_hw=(32, 32),
                                     num_classes=10)
  assert phase.total_steps == 20                     # 2 epochs of 1000 at batch 100
  assert (phase.warmup_steps, tuple(phase.decay_steps)) == (4, (8, 12, 16))   # 0.2/.4/.6/.8


def test_phases_inherit_and_carry_weights():
  c = config(phases=({'name': 'head', 'freeze': '^(?!head)', 'batch_size': 32},
                     {'name': 'all', 'lr': 0.01}))
  head, everything = phases.phase_configs(c)
  assert (head.name, head.init, head.freeze, head.batch_size) == ('head', 'BiT-M-R50x1',
                                                                  '^(?!head)', 32)
  assert (everything.init, everything.freeze, everything.batch_size, everything.lr) == (
      'previous', '', 512, 0.01)


def test_unknown_phase_field_is_an_error_that_lists_fields():
  with pytest.raises(ValueError, match="unknown fields \\['batchsize'\\].*batch_size"):
    phases.phase_configs(config(phases=({'batchsize': 3},)))
  with pytest.raises(ValueError, match='plateau'):
    phases.phase_configs(config(lr_schedule='cosine'))


def test_learning_rate_kinds():
  [phase] = phases.phase_configs(config(lr=0.1, warmup_steps=10, decay_steps=(20,),
                                        total_steps=30))
  phase = phases.fill_from_hyperrule(phase, num_examples=100, image_hw=(32, 32),
                                     num_classes=2)
  assert [phases.learning_rate(phase, s) for s in (0, 5, 10, 20, 21)] == pytest.approx(
      [0.0, 0.05, 0.1, 0.1, 0.01])
  phase.lr_schedule = 'plateau'
  assert phases.learning_rate(phase, 25, plateau_scale=0.1) == pytest.approx(0.01)


def test_plateau_reduces_then_stops():
  plateau = phases.Plateau(patience=2, factor=0.5, stop_patience=3)
  assert not plateau.update(1.0)
  assert not plateau.update(1.1) and plateau.scale == 1.0
  assert not plateau.update(1.2) and plateau.scale == 0.5      # 2 evaluations without a better loss
  assert plateau.update(1.3)                                   # 3: stop
  restored = phases.Plateau(**vars(plateau))                   # checkpointed as JSON
  assert restored == plateau and math.isinf(phases.Plateau(1, 0.1, None).best)


def test_upstream_schedule_in_epochs():
  [phase] = phases.phase_configs(config(epochs=90.0, warmup_epochs=1.0,
                                        decay_epochs=(30.0, 60.0, 80.0), batch_size=256,
                                        base_lr=0.03, base_batch=256))
  phase = phases.fill_from_hyperrule(phase, num_examples=2560, image_hw=(224, 224),
                                     num_classes=1000)
  assert (phase.total_steps, phase.warmup_steps, tuple(phase.decay_steps)) == (
      900, 10, (300, 600, 800))
  assert phase.lr == pytest.approx(0.03)
