"""The phase features the papers' own protocols need, each against an independent oracle:
re-initialised parameters against a fresh init, plateau/early stopping on accuracy against a
hand-worked sequence, step decay and Prasad et al.'s eq. 9 by hand, dropout against its
definition, augmentation off against the eval images, and the class swap's halves and means
by hand."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bit_jax import models
from bit_jax.data import input_pipeline
from bit_jax.data.data_sources import get_source
from bit_jax.models import layers, pretrained
from bit_jax.recipe import defaults, fields, hyperrule, plan
from bit_jax.recipe.plateau import Plateau
from bit_jax.runtime import files, metric_names
from bit_jax.runtime.errors import ConfigError
from bit_jax.studies import class_split, stepwise
from bit_jax.training import weights


def tiny(**overrides):
  """R14x0.5 on 3 digit classes at 16 px (tests/configs/tiny.py)."""
  c = defaults.base_config()
  c.update(
    model='R14x0.5',
    init='scratch',
    dataset='sklearn_digits',
    classes=(0, 1, 2),
    resize=18,
    crop=16,
    batch_size=16,
    lr=0.05,
    total_steps=4,
  )
  c.update(overrides)
  return c


# --- re-initialising what a regex selects ---------------------------------------------------


def test_reinit_draws_the_selected_params_from_a_fresh_init_and_loads_the_rest(tmp_path):
  [source] = plan.resolve(tiny(seed=3)).phases
  trained = jax.tree.map(lambda p: p + 0.5, weights.initial_params(source, None))
  checkpoint = tmp_path / 'source.npz'
  files.write_npz(checkpoint, pretrained.params_to_npz(trained))
  snt = layers.transfer_first(2, layers.layers(source.architecture))  # root + stage 1 kept
  [phase] = plan.resolve(tiny(init=str(checkpoint), seed=7, **snt)).phases
  params = traverse_util.flatten_dict(weights.initial_params(phase, None), sep='/')
  fresh = jax.jit(phase.model().init)(jax.random.PRNGKey(7), jnp.zeros((1, 16, 16, 3)))['params']
  fresh, loaded = (traverse_util.flatten_dict(t, sep='/') for t in (fresh, trained))
  kept = [p for p in params if p.startswith(('root_block/', 'block1/'))]
  assert len(kept) > 5 and snt['freeze'] == '^root_block/|^block1/'
  for path, value in params.items():
    expected = loaded[path] if path in kept else fresh[path]
    np.testing.assert_array_equal(value, expected, err_msg=path)
  # Not vacuous: the two sources differ everywhere outside the zero-initialised head.
  assert not np.array_equal(
    fresh['block3/unit01/conv2/kernel'], loaded['block3/unit01/conv2/kernel']
  )


def test_reinit_is_checked_before_training():
  with pytest.raises(ConfigError, match="reinit='blok2' matches no parameter"):
    plan.resolve(tiny(phases=({}, {'reinit': 'blok2'})))
  with pytest.raises(ConfigError, match="init='scratch': everything is new"):
    plan.resolve(tiny(reinit='block2'))
  with pytest.raises(ConfigError, match='reinit=.*not a regular expression'):
    plan.resolve(tiny(reinit='block(2'))


def test_layers_count_the_root_the_stages_or_the_units_and_the_head():
  r50 = models.Architecture.from_name('R50x1')
  assert layers.layers(r50) == (
    '^root_block/',
    '^block1/',
    '^block2/',
    '^block3/',
    '^block4/',
    '^(pre_head_norm|head)/',
  )
  units = layers.layers(r50, per='unit')
  assert len(units) == 1 + 3 + 4 + 6 + 3 + 1 and units[4] == '^block2/unit01/'
  snt = layers.transfer_first(5, layers.layers(r50))
  assert snt['reinit'] == '^(pre_head_norm|head)/' and snt['freeze'].count('|') == 4
  with pytest.raises(ValueError, match='0 <= n < 6'):
    layers.transfer_first(6, layers.layers(r50))


# --- reduce-on-plateau and early stopping on a chosen metric --------------------------------


def test_plateau_on_accuracy_against_a_hand_computation():
  # Validation top-1 after each evaluation; patience 2, factor 0.1, stop after 3.
  accuracies = [0.50, 0.60, 0.60, 0.55, 0.65, 0.64, 0.64, 0.63]
  # By hand: best 0.50, 0.60; 0.60 (not strictly better) 1, 0.55 2 -> lr x0.1; 0.65 best;
  # 0.64 1, 0.64 2 -> lr x0.1 again; 0.63 3 evaluations without a better one -> stop.
  expected_scale = [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
  expected_stop = [False] * 7 + [True]
  plateau = Plateau(2, 0.1, 3, mode=metric_names.MONITOR_MODES[metric_names.VAL_TOP1])
  for accuracy, scale, stop in zip(accuracies, expected_scale, expected_stop):
    assert plateau.update(accuracy) == stop
    assert plateau.scale == pytest.approx(scale)
  assert plateau.best == 0.65
  # A loss, the same numbers: lower is better, so 0.50 stays the best throughout.
  loss = Plateau(2, 0.1, 3, mode=metric_names.MONITOR_MODES[metric_names.VAL_LOSS])
  assert [loss.update(v) for v in accuracies[:4]] == [False, False, False, True]
  restored = Plateau(**vars(plateau))  # checkpointed as JSON
  assert restored == plateau and Plateau(1, 0.1, None, mode='max').best == -math.inf


def test_plateau_and_early_stopping_need_a_holdout():
  with pytest.raises(ConfigError, match='watch val_top1, which needs val_fraction'):
    plan.resolve(tiny(lr_schedule='plateau', monitor='val_top1'))
  with pytest.raises(ConfigError, match="monitor='test_top1'"):
    plan.resolve(tiny(monitor='test_top1', val_fraction=0.2))
  resolved = plan.resolve(tiny(early_stopping_patience=2, monitor='val_top1', val_fraction=0.2))
  assert 'on val_top1' in resolved.table()


# --- epochs, step decays, augmentation off ---------------------------------------------------


def test_step_decay_at_given_epochs_by_hand():
  # Prasad et al.: 20 epochs, x0.1 every 10. 100 examples at batch 10: 10 steps an epoch.
  c = tiny(
    lr_schedule='step',
    lr=0.5,
    batch_size=10,
    total_steps=None,
    epochs=20.0,
    decay_epochs=(10.0,),
    warmup_steps=0,
  )
  [phase] = fields.phase_settings(c)
  phase = hyperrule.fill(phase, num_examples=100, image_hw=(16, 16), num_classes=3)
  assert (phase.total_steps, tuple(phase.decay_steps)) == (200, (100,))
  rates = [hyperrule.learning_rate(phase, step) for step in (0, 99, 100, 199, 250)]
  assert rates == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.05])
  phase = dataclasses.replace(phase, decay_steps=(30, 60, 90), decay_factor=0.5)
  assert hyperrule.learning_rate(phase, 95) == pytest.approx(0.5 * 0.5**3)


def test_no_augmentation_trains_on_the_images_the_eval_sees():
  source = get_source('sklearn_digits', 'train', classes=(0, 1, 2))
  ids = np.arange(8)
  train = next(
    input_pipeline.train_data(
      source, ids=ids, global_batch_size=8, crop=16, resize=18, seed=0, preprocess='none'
    )
  )
  evaluation = next(iter(input_pipeline.eval_data(source, global_batch_size=8, crop=16, ids=ids)))
  by_id = {int(i): image for i, image in zip(evaluation['id'], evaluation['image'])}
  for i, image in zip(train['id'], train['image']):
    np.testing.assert_array_equal(image, by_id[int(i)])


# --- dropout before the head -----------------------------------------------------------------


def test_dropout_before_the_head_is_its_definition_and_off_at_eval():
  model = models.create_model('R14x0.5', None)
  dropped = models.Architecture.from_name('R14x0.5').model(1024, dropout=0.5)
  images = jax.random.uniform(jax.random.PRNGKey(0), (8, 16, 16, 3), minval=-1, maxval=1)
  # Jitted: op by op, each of the model's few hundred operations would compile on its own.
  params = jax.jit(dropped.init)(jax.random.PRNGKey(1), images)['params']
  # An identity head (1024 features -> 1024 "classes"): the logits are the dropped features.
  params['head'] = {'kernel': jnp.eye(1024), 'bias': jnp.zeros(1024)}
  features = jax.jit(model.apply)(
    {'params': {k: v for k, v in params.items() if k != 'head'}}, images
  )
  evaluated = jax.jit(dropped.apply)({'params': params}, images)
  np.testing.assert_allclose(evaluated, features, atol=1e-6)
  train = jax.jit(functools.partial(dropped.apply, train=True))(
    {'params': params}, images, rngs={'dropout': jax.random.PRNGKey(2)}
  )
  train, features = np.asarray(train), np.asarray(features)
  zero, live = train == 0, features != 0  # ReLU leaves some features 0 before any dropout
  np.testing.assert_allclose(train[~zero], 2 * features[~zero], rtol=1e-5)  # kept: x / (1 - p)
  assert live.sum() > 2000 and 0.45 < zero[live].mean() < 0.55  # p = 0.5: > 4.5 std either side
  with pytest.raises(ConfigError, match='dropout=1.0'):
    plan.resolve(tiny(dropout=1.0))


# --- Prasad et al.'s eq. 9 --------------------------------------------------------------------


def test_eq9_learning_rates_by_hand_for_five_subsets():
  lam, b = 0.001, 128
  # λ′ (summed gradients): λ, then each previous / (10 · n · b) with n = 5 subsets.
  rate_b = 0.001 / 10 / (5 * 128)
  rate_c = rate_b / 10 / (5 * 128)
  rate_d = rate_c / 10 / (5 * 128)
  rate_o = rate_d / 10 / (5 * 128)
  assert stepwise.eq9_rates(lam, b, 5) == pytest.approx((0.001, rate_b, rate_c, rate_d, rate_o))
  # Our lr on the mean loss: λ′ times the phase's batch b, 2b, 3b, 4b, b.
  expected = (0.001 * 128, rate_b * 256, rate_c * 384, rate_d * 512, rate_o * 128)
  assert stepwise.learning_rates(lam, b, (1, 2, 3, 4, 1)) == pytest.approx(expected, rel=1e-12)
  assert expected[1] == pytest.approx(4e-5)  # 0.001 · 256 / 6400


# --- the class swap --------------------------------------------------------------------------


def test_class_halves_are_disjoint_and_cover_every_class():
  a, b = class_split.halves(200, seed=0)
  assert len(a) == len(b) == 100 and not set(a) & set(b) and set(a) | set(b) == set(range(200))
  assert class_split.halves(10, seed=None) == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))


def test_swap_runs_both_directions_and_reports_their_mean():
  runs = [
    dict(name='source', classes='{source}', seeds=1),
    dict(name='snt2', classes='{target}', init='{workdir}/source_{direction}/final.npz'),
    dict(name='other', classes=(0, 1)),
  ]
  expanded = class_split.expand(runs, dict(halves=((0, 1), (2, 3))))
  names = [r['name'] for r in expanded]
  assert names == ['source_AB', 'source_BA', 'snt2_AB', 'snt2_BA', 'other']
  assert expanded[0]['classes'] == (0, 1) and expanded[1]['classes'] == (2, 3)
  assert expanded[2]['classes'] == (2, 3) and expanded[2]['init'].endswith('source_AB/final.npz')
  assert expanded[3]['tags'] == {'direction': 'B->A'}
  rows = [
    dict(name='snt2_AB', seed_index=0, direction='A->B', top1=0.6, classes=(2, 3), steps=10),
    dict(name='snt2_BA', seed_index=0, direction='B->A', top1=0.4, classes=(0, 1), steps=10),
    dict(name='snt2_AB', seed_index=1, direction='A->B', top1=0.7, classes=(2, 3), steps=10),
    dict(name='other', seed_index=0, top1=0.9),
  ]
  other, mean = class_split.direction_means(rows)  # seed 1 waits for its B->A
  assert other == rows[3]
  assert mean == dict(
    name='snt2', seed_index=0, direction='mean', top1=pytest.approx(0.5), classes='', steps=10.0
  )
  with pytest.raises(ValueError, match='disjoint'):
    class_split.expand(runs, dict(halves=((0, 1), (1, 2))))
