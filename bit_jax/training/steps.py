"""The jitted train and eval steps: arrays in, arrays out.

    train_step(state, batch, lr, rng) -> state, {'loss'}
    eval_step(params, batch) -> {'top1', 'top5', 'count', 'loss'}   (sums over the batch)

`state` is a dict {'params', 'opt_state', 'step'}. Gradient accumulation (`batch_split`, the
official PyTorch port's way to fit big models) scans over micro-batches and averages their
gradients before one optimizer update, which equals the update of one big batch.
"""

from types import MappingProxyType

import jax
import jax.numpy as jnp
import optax

from bit_jax.training.mixup import mixup


def sigmoid_xent(logits, targets):
  """Multi-label (BiT-M on ImageNet-21k): independent binary losses summed over classes."""
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)


LOSSES = MappingProxyType({'softmax': optax.softmax_cross_entropy, 'sigmoid': sigmoid_xent})


def targets_of(labels, num_classes: int, dtype=jnp.float32):
  """Int labels -> one-hot; multi-hot float labels pass through."""
  if labels.ndim == 2:
    return labels.astype(dtype)
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def make_train_step(
  model, optimizer, *, loss: str = 'softmax', mixup_alpha: float = 0.0, batch_split: int = 1
):
  """A pure `train_step(state, batch, lr, rng)`; jit it with the shardings you want."""
  loss_fn = LOSSES[loss]
  num_classes = model.num_classes

  def mean_loss(params, images, targets, key):
    # Dropout (a model with `dropout` > 0) draws its mask from `key`; it is off at eval.
    logits = model.apply({'params': params}, images, train=True, rngs={'dropout': key})
    return jnp.mean(loss_fn(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), targets))

  def loss_and_grads(params, images, targets, key):
    if batch_split == 1:
      return jax.value_and_grad(mean_loss)(params, images, targets, key)

    # Micro-batch j takes examples j, j + k, j + 2k, ...: every device keeps a share of every
    # micro-batch, so data parallelism is not lost to the split.
    def split(x):
      return x.reshape(x.shape[0] // batch_split, batch_split, *x.shape[1:]).swapaxes(0, 1)

    def accumulate(carry, micro):
      value, grads = jax.value_and_grad(mean_loss)(params, *micro)
      return jax.tree.map(jnp.add, carry, (value, grads)), None

    zeros = (
      jnp.zeros((), jnp.promote_types(images.dtype, jnp.float32)),
      jax.tree.map(jnp.zeros_like, params),
    )
    keys = jax.random.split(key, batch_split)
    total, _ = jax.lax.scan(accumulate, zeros, (split(images), split(targets), keys))
    return jax.tree.map(lambda t: t / batch_split, total)

  def train_step(state, batch, lr, rng):
    targets = targets_of(
      batch['label'], num_classes, jnp.promote_types(batch['image'].dtype, jnp.float32)
    )
    step_rng = jax.random.fold_in(rng, state['step'])
    images, targets = mixup(step_rng, batch['image'], targets, mixup_alpha)
    value, grads = loss_and_grads(state['params'], images, targets, jax.random.fold_in(step_rng, 1))
    direction, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    updates = jax.tree.map(lambda d: -lr * d, direction)
    new_state = {
      'params': optax.apply_updates(state['params'], updates),
      'opt_state': opt_state,
      'step': state['step'] + 1,
    }
    return new_state, {'loss': value}

  return train_step


def make_eval_step(model, *, loss: str = 'softmax'):
  """`eval_step(params, batch)` -> sums of top-1/top-5 hits, examples and loss over `mask`."""
  loss_fn = LOSSES[loss]

  def eval_step(params, batch):
    logits = model.apply({'params': params}, batch['image'])
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    labels, mask = batch['label'], batch['mask'].astype(logits.dtype)
    targets = targets_of(labels, logits.shape[-1], logits.dtype)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    # A hit is a predicted class that is a positive label (one-hot or multi-hot alike).
    hit = jnp.take_along_axis(targets, top5, axis=-1) > 0
    return {
      'top1': jnp.sum(hit[:, 0] * mask),
      'top5': jnp.sum(jnp.any(hit, -1) * mask),
      'count': jnp.sum(mask),
      'loss': jnp.sum(loss_fn(logits, targets) * mask),
    }

  return eval_step
