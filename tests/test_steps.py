"""The jitted train/eval steps. Oracles: a one-device run, one big batch, numpy top-k."""

import jax
import jax.numpy as jnp
import numpy as np
import on_devices
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bit_jax import models
from bit_jax.recipe import optim
from bit_jax.training import steps


def setup(freeze='', num_classes=3, batch=16, seed=0, dtype=jnp.float32):
  model = models.ResNetV2(
    depth=14, width=0.5, num_classes=num_classes, dtype=dtype, param_dtype=dtype
  )
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (batch, 16, 16, 3)).astype(dtype)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), images[:1])['params']
  # A non-zero head, so every layer gets gradients from the first step.
  params['head']['kernel'] = jnp.asarray(rng.normal(0, 0.1, params['head']['kernel'].shape), dtype)
  optimizer = optim.make_optimizer(params, momentum=0.9, freeze=freeze)
  state = {'params': params, 'opt_state': optimizer.init(params), 'step': jnp.zeros((), jnp.int32)}
  return model, optimizer, state, {'image': images, 'label': labels}


def run(step_fn, state, batch, n=3, lr=0.005, **jit_kwargs):
  step_fn = jax.jit(step_fn, **jit_kwargs)
  for _ in range(n):
    state, _ = step_fn(state, batch, lr, jax.random.PRNGKey(0))
  return jax.device_get(state['params'])


def assert_trees_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def test_eight_devices_match_one_device(request):
  """Data parallelism changes only the order of the reductions. In float64 end to end (every
  statistic, the loss and MixUp follow the input dtype) reordering moves results by ~1e-16
  relative; weight standardisation and 3 steps at lr 0.05 amplify that by at most ~1e4, so the
  two runs agree to 1e-10 where any real difference (a lost gradient shard, a wrong mean over
  devices) shows up at 1e-3 or more."""
  if on_devices.rerun_with_devices(8, request):
    return
  assert jax.device_count() == 8
  with jax.enable_x64(True):
    model, optimizer, state, batch = setup(dtype=jnp.float64)
    step = steps.make_train_step(model, optimizer, mixup_alpha=0.1)
    one = run(step, jax.device_put(state, jax.devices()[0]), batch, lr=0.05)
    mesh = Mesh(np.array(jax.devices()), ('data',))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec('data'))
    eight = run(
      step,
      jax.device_put(state, replicated),
      jax.device_put(batch, sharded),
      lr=0.05,
      in_shardings=(replicated, sharded, None, None),
      out_shardings=(replicated, replicated),
    )
    before = jax.device_get(state['params'])
  assert all(x.dtype == np.float64 for x in jax.tree.leaves(one))
  assert_trees_close(one, eight, atol=1e-10)
  moved = np.abs(
    one['block1']['unit01']['conv1']['kernel'] - before['block1']['unit01']['conv1']['kernel']
  ).max()
  assert moved > 1e-3  # the steps did change the weights: the agreement is not trivial


def test_gradient_accumulation_equals_one_big_batch():
  model, optimizer, state, batch = setup(batch=16)
  big = run(steps.make_train_step(model, optimizer), state, batch, n=2)
  split = run(steps.make_train_step(model, optimizer, batch_split=4), state, batch, n=2)
  assert_trees_close(big, split, atol=2e-6)


def test_frozen_parameters_are_bit_identical():
  model, optimizer, state, batch = setup(freeze='root_block|block1')
  before = jax.device_get(state['params'])
  after = run(steps.make_train_step(model, optimizer), state, batch)
  for path in ('root_block', 'block1'):
    for x, y in zip(jax.tree.leaves(before[path]), jax.tree.leaves(after[path])):
      np.testing.assert_array_equal(x, y)
  changed = [
    not np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(before['block2']), jax.tree.leaves(after['block2']))
  ]
  assert all(changed)


def test_freeze_regex_that_matches_nothing_is_an_error():
  _, _, state, _ = setup()
  with pytest.raises(ValueError, match='root_block'):
    optim.frozen_mask(state['params'], 'stage1')


def test_eval_step_counts_top1_top5_under_mask():
  model = models.ResNetV2(depth=14, width=0.5, num_classes=7)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (12, 16, 16, 3)).astype(np.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])['params']
  params['head']['kernel'] = jnp.asarray(
    rng.normal(0, 1, params['head']['kernel'].shape), jnp.float32
  )
  labels = rng.integers(0, 7, 12).astype(np.int32)
  mask = np.arange(12) < 9
  out = jax.jit(steps.make_eval_step(model))(
    params, {'image': images, 'label': labels, 'mask': mask}
  )
  logits = np.asarray(jax.jit(model.apply)({'params': params}, images))
  order = np.argsort(-logits, axis=1)
  assert out['count'] == 9
  assert out['top1'] == np.sum((order[:, 0] == labels) & mask)
  assert out['top5'] == np.sum((order[:, :5] == labels[:, None]).any(1) & mask)
  log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  np.testing.assert_allclose(
    out['loss'], -np.sum(log_probs[np.arange(12), labels] * mask), rtol=1e-5
  )


def test_sigmoid_loss_for_multi_hot_labels():
  logits = jnp.array([[2.0, -1.0, 0.5]])
  targets = jnp.array([[1.0, 0.0, 1.0]])
  expected = sum(
    np.log1p(np.exp(-z)) if t else np.log1p(np.exp(z)) for z, t in zip([2.0, -1.0, 0.5], [1, 0, 1])
  )
  np.testing.assert_allclose(steps.sigmoid_xent(logits, targets), [expected], rtol=1e-6)
