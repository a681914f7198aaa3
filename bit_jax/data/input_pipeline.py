"""Training and evaluation batches from a `DataSource`: subsets, per-process shards,
BiT / Inception preprocessing, batching, eval padding.

Sharding. The used ids (a subset from `subsets.py`, or the whole split) are sorted and
process p keeps every P-th: ``ids[p::P]``. Processes thus read disjoint parts that
together cover the used ids, and each yields ``global_batch_size // P`` examples a batch.

Determinism and exact resume. Every random choice is a pure function of the seed and a
position, never of how far an iterator has run:

* epoch e of process p is its shard in an order drawn with a seed hashed from
 (seed, p, e): cut into windows of `shuffle_buffer` records, each permuted by a
 stateless shuffle (default window 50,000: for small data a true permutation);
* the example at place k of the process's endless stream is augmented with stateless
 ops seeded from (seed, k * P + p), its place in the global stream.

With b examples a batch per process and n in its shard, ``start_step=s`` starts the
endless stream at epoch ``s * b // n`` without reading earlier epochs, skips the first
``s * b % n`` records of that epoch (undecoded, cheap) and numbers the rest from
``s * b``: it yields exactly the batches s, s + 1, ... of an uninterrupted run. Nothing
depends on TF's global seed. Shards larger than a window keep their windows' members
in every epoch (only the order inside a window changes), so such sources must be stored
in random order, as TFDS stores them.

Evaluation. Every process yields the same number of batches, ``ceil(ceil(N / P) / b)``,
as SPMD programs need, and pads its shard with ``mask=False`` examples: each used
example is seen exactly once, with its ``'id'``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf

from bit_jax.data.data_sources import DataSource

PREPROCESSINGS = ('bit', 'inception', 'none')
DEFAULT_SHUFFLE_BUFFER = 50_000
CACHE_LIMIT = 10_000  # shards up to this many examples are cached (undecoded) in memory
_SHUFFLE, _AUGMENT = 0, 1  # keep the shuffle's and the augmentations' seeds unrelated
_FOREVER = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class _Share:
  """What one process reads: its ids, out of `num_used`, and its batch size."""

  ids: np.ndarray
  num_used: int
  batch_size: int
  process_index: int
  process_count: int


def _used_ids(source: DataSource, ids) -> np.ndarray:
  """The sorted ids to read: `ids` checked against the source, or all of it."""
  if ids is None:
    return np.arange(source.num_examples, dtype=np.int64)
  given = np.asarray(ids)
  used = np.unique(given).astype(np.int64)
  if given.ndim != 1 or not np.issubdtype(given.dtype, np.integer) or len(used) < len(given):
    raise ValueError(
      f'Expected ids as a 1-D array of distinct integers; got {given.dtype} '
      f'{given.shape} with {given.size - len(used)} repeats.'
    )
  if len(used) and (used[0] < 0 or used[-1] >= source.num_examples):
    raise ValueError(
      f'Expected ids in [0, {source.num_examples}) for {source.name}; got '
      f'{used[0]}..{used[-1]}. Were they drawn from another split?'
    )
  return used


def _process_share(
  source: DataSource, ids, global_batch_size: int, process_index, process_count
) -> _Share:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'Expected 0 <= process_index < {process_count}; got {process_index}.')
  if global_batch_size % process_count:
    raise ValueError(
      f'Expected a global batch size divisible by the {process_count} processes; '
      f'got {global_batch_size}. Use a multiple of {process_count}, e.g. '
      f'{math.ceil(global_batch_size / process_count) * process_count}.'
    )
  used = _used_ids(source, ids)
  return _Share(
    ids=used[process_index::process_count],
    num_used=len(used),
    batch_size=global_batch_size // process_count,
    process_index=process_index,
    process_count=process_count,
  )


def _records_of(source: DataSource, ids: np.ndarray) -> tf.data.Dataset:
  """The source's undecoded records whose id is in `ids`, in id order."""
  records = source.undecoded_records()
  if len(ids) == source.num_examples:
    return records
  keep = np.zeros(source.num_examples, bool)
  keep[ids] = True
  keep = tf.constant(keep)
  return records.filter(lambda record: tf.gather(keep, record['id']))


def _seed(*values) -> tf.Tensor:
  """A stateless-RNG seed (int64 [2]) hashed from `values`."""
  key = tf.constant([0, 0], tf.int64)
  for value in values:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
  return key


def _permuted_windows(records: tf.data.Dataset, window: int, key) -> tf.data.Dataset:
  """`records` cut into windows of `window`, each put in a seeded random order.

  A window that holds the whole shard makes the epoch a uniform permutation. Unlike
  `Dataset.shuffle`, this depends on nothing but `key` (not on `tf.random.set_seed`).
  """

  def permute(index, batch):
    size = tf.shape(batch['id'])[0]
    order = tf.random.experimental.stateless_shuffle(
      tf.range(size), tf.random.experimental.stateless_fold_in(key, index)
    )
    return {name: tf.gather(values, order) for name, values in batch.items()}

  # ragged_batch, not batch: multi-label records carry a label list of varying length.
  return records.ragged_batch(window).enumerate().map(permute).unbatch()


def _to_unit_range(image: tf.Tensor) -> tf.Tensor:
  return image / 127.5 - 1.0  # [0, 255] -> [-1, 1], as BiT was trained


def _bit_augment(image, seed, *, resize: int, crop: int) -> tf.Tensor:
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = tf.image.resize(image, [resize, resize])
  image = tf.image.stateless_random_crop(image, [crop, crop, 3], seed=crop_seed)
  # A *random* flip: the official code always flips, which is a bug.
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _inception_augment(image, seed, *, crop: int) -> tf.Tensor:
  box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.shape(image),
    bounding_boxes=tf.zeros([0, 0, 4]),
    seed=box_seed,
    min_object_covered=0.0,
    aspect_ratio_range=(3 / 4, 4 / 3),
    area_range=(0.05, 1.0),
    use_image_if_no_bounding_boxes=True,
  )
  image = tf.image.resize(tf.slice(image, begin, size), [crop, crop])
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _no_augment(image, seed, *, crop: int) -> tf.Tensor:
  """Training images as the eval sees them (resized to `crop`, no crop, no flip): papers
  that train "without augmentation" (Prasad et al.)."""
  del seed
  return tf.image.resize(image, [crop, crop])


def _label(label: tf.Tensor, num_classes: int, multi_hot: bool) -> tf.Tensor:
  """The int class, or with `multi_hot` a float32 [num_classes] of 0/1 (one or many)."""
  if not multi_hot:
    return label
  one_hot = tf.one_hot(label, num_classes, dtype=tf.float32)
  if label.shape.rank == 0:
    return one_hot
  return tf.minimum(tf.reduce_sum(one_hot, axis=0), 1.0)  # an empty list gives all 0


def _with_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  return dataset.with_options(options)


def train_data(
  source: DataSource,
  *,
  global_batch_size: int,
  crop: int,
  seed: int,
  resize: int | None = None,
  preprocess: str = 'bit',
  ids: np.ndarray | None = None,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
  multi_hot: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless shuffled, augmented batches of this process's share, from `start_step` on.

  Yields ``{'image': float32 [b, crop, crop, 3] in [-1, 1], 'label': int32 [b] (float32
  [b, num_classes] with multi_hot), 'id': int64 [b]}`` with b = global_batch_size /
  process_count. 'bit' resizes to `resize` squared, then random-crops `crop` and
  flips; 'inception' takes a random 5-100% area, 3/4-4/3 aspect crop, resized to `crop`;
  'none' resizes to `crop` and nothing else, as `eval_data` does.
  """
  share = _process_share(source, ids, global_batch_size, process_index, process_count)
  augment = _augmentation(preprocess, crop=crop, resize=resize)
  _check_shard(source, share, shuffle_buffer)
  stream = _examples_from(
    _shard_records(source, share), share, seed, start_step * share.batch_size, shuffle_buffer
  )

  def preprocess_example(place, record):
    image = source.decode_image(record['image'])
    key = _seed(seed, _AUGMENT, place * share.process_count + share.process_index)
    return {
      'image': _to_unit_range(augment(image, key)),
      'label': _label(record['label'], source.num_classes, multi_hot),
      'id': record['id'],
    }

  batches = stream.map(
    preprocess_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  ).batch(share.batch_size, drop_remainder=True)
  return _with_options(batches.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def _augmentation(preprocess: str, *, crop: int, resize: int | None):
  """The `train_data` augmentation named `preprocess`: (image, seed) -> image."""
  if preprocess == 'bit':
    if resize is None or crop > resize:
      raise ValueError(
        f"Expected 'bit' preprocessing with crop <= resize; got resize={resize}, "
        f'crop={crop}. Pass resize (BiT-HyperRule: 160 -> 128, 512 -> 480).'
      )
    return functools.partial(_bit_augment, resize=resize, crop=crop)
  if preprocess == 'inception':
    return functools.partial(_inception_augment, crop=crop)
  if preprocess == 'none':
    return functools.partial(_no_augment, crop=crop)
  raise ValueError(f'Expected preprocess in {PREPROCESSINGS}; got {preprocess!r}.')


def _check_shard(source: DataSource, share: _Share, shuffle_buffer: int) -> None:
  """An error for a process left without examples; a warning where shuffling is partial."""
  shard_size = len(share.ids)
  if shard_size == 0:
    raise ValueError(
      f'Expected at least one training example per process; {share.num_used} ids '
      f'over {share.process_count} processes leave none to process '
      f'{share.process_index}. Use more examples or fewer processes.'
    )
  if shard_size > shuffle_buffer:
    logging.warning(
      '%s: shuffling %d examples only within windows of %d; the source order must '
      'already be random (TFDS is, image folders are not).',
      source.name,
      shard_size,
      shuffle_buffer,
    )


def _shard_records(source: DataSource, share: _Share) -> tf.data.Dataset:
  """This process's undecoded records, in id order."""
  records = _records_of(source, share.ids)
  if len(share.ids) <= CACHE_LIMIT:
    # Every epoch re-reads the shard, and `_records_of` finds it by scanning the whole
    # split: a 1-shot set of 5 images at batch 64 would scan the split 13 times a
    # batch. Small shards are kept in memory undecoded (a few MB) after the first epoch.
    records = records.cache()
  return records


def _examples_from(
  records: tf.data.Dataset, share: _Share, seed: int, first_example: int, shuffle_buffer: int
) -> tf.data.Dataset:
  """(place, record) pairs of endless epochs, each shuffled by its own seed, from the
  `first_example`-th on (a resumed run skips records, never decodes them)."""

  def one_epoch(epoch):
    return _permuted_windows(
      records, shuffle_buffer, _seed(seed, _SHUFFLE, share.process_index, epoch)
    )

  start_epoch, into_epoch = divmod(first_example, len(share.ids))
  stream = tf.data.Dataset.range(start_epoch, _FOREVER).flat_map(one_epoch)
  return stream.skip(into_epoch).enumerate(start=first_example)


def process_batches(
  source: DataSource,
  *,
  data_shards: int,
  process_index: int | None = None,
  process_count: int | None = None,
  **train_data_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
  """This process's part of every global batch when the data is cut into `data_shards`
  shards (a multiple of the processes): its shards' `train_data` streams, concatenated. The
  global batch is then the same whatever the number of processes, for the same shards."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  per_process = data_shards // process_count
  first = process_index * per_process
  streams = [
    train_data(source, process_index=shard, process_count=data_shards, **train_data_kwargs)
    for shard in range(first, first + per_process)
  ]
  for parts in zip(*streams):
    if len(parts) == 1:  # the usual case: no copy of what may be a gigabyte a step
      yield {k: parts[0][k] for k in ('image', 'label')}
    else:
      yield {k: np.concatenate([p[k] for p in parts]) for k in ('image', 'label')}


def num_eval_batches(num_examples: int, global_batch_size: int, process_count: int) -> int:
  """Batches each process yields: enough for the largest shard, ceil(N / P)."""
  largest_shard = math.ceil(num_examples / process_count)
  return math.ceil(largest_shard / (global_batch_size // process_count))


@dataclasses.dataclass(frozen=True)
class EvalData:
  """Re-iterable eval batches ``{'image', 'label', 'id', 'mask'}``; `len` = batches."""

  dataset: tf.data.Dataset
  num_batches: int

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self.dataset.as_numpy_iterator()

  def __len__(self) -> int:
    return self.num_batches


def eval_data(
  source: DataSource,
  *,
  global_batch_size: int,
  crop: int,
  ids: np.ndarray | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  multi_hot: bool = False,
) -> EvalData:
  """This process's eval batches: images resized to `crop` squared, no randomness.

  Batches are ``{'image': float32 [b, crop, crop, 3], 'label', 'id': int64 (-1 on
  padding), 'mask': bool}``; only ``mask=True`` rows are examples.
  """
  share = _process_share(source, ids, global_batch_size, process_index, process_count)
  num_batches = num_eval_batches(share.num_used, global_batch_size, share.process_count)

  def preprocess_example(record):
    image = tf.image.resize(source.decode_image(record['image']), [crop, crop])
    return {
      'image': _to_unit_range(image),
      'label': _label(record['label'], source.num_classes, multi_hot),
      'id': record['id'],
      'mask': tf.constant(True),
    }

  examples = _records_of(source, share.ids).map(
    preprocess_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  label_spec = examples.element_spec['label']
  padding = tf.data.Dataset.from_tensors(
    {
      'image': tf.zeros([crop, crop, 3]),
      'label': tf.zeros(label_spec.shape, label_spec.dtype),
      'id': tf.constant(-1, tf.int64),
      'mask': tf.constant(False),
    }
  ).repeat(num_batches * share.batch_size - len(share.ids))
  batches = examples.concatenate(padding).batch(share.batch_size, drop_remainder=True)
  return EvalData(_with_options(batches.prefetch(tf.data.AUTOTUNE)), num_batches)
