"""Where images come from: a TFDS split, a folder of images per class, or numpy arrays.

Each is a `DataSource`: one split as tf.data records ``{'image', 'label', 'id'}`` in one
fixed order, where an example's id is its position in that order (the ids `subsets.py`
draws subsets from), plus its size, its number of classes and all its labels as numpy.

The pipeline reads records *undecoded* (`undecoded_records`) and decodes them with
`decode_image` only after it has dropped the examples it does not use and shuffled: a
subset, another process's shard or the skipped start of a resumed epoch then costs a
record read, never an image decode. `records()` is the decoded view, for everyone else.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# JAX owns the accelerators; a TF that also initialised them would take their memory.
try:
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # TF already initialised its devices; nothing to do
  pass

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def decode_encoded_image(encoded: tf.Tensor) -> tf.Tensor:
  """JPEG/PNG bytes -> uint8 [H, W, 3]; grayscale is repeated, alpha dropped."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One split of labelled images, always read in the same order.

  `undecoded_records()` gives ``{'image': <what decode_image takes>, 'label': int32,
  'id': int64}``; `labels` returns the int label of every example in id order.
  """

  name: str
  num_examples: int
  num_classes: int
  undecoded_records: Callable[[], tf.data.Dataset]
  decode_image: Callable[[tf.Tensor], tf.Tensor]
  labels: Callable[[], np.ndarray]
  skipped_files: tuple[str, ...] = ()  # unreadable images left out (image folders)

  def records(self) -> tf.data.Dataset:
    """``{'image': uint8 [H, W, 3], 'label': int32, 'id': int64}`` in id order."""
    return self.undecoded_records().map(
      lambda record: {**record, "image": self.decode_image(record["image"])},
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )


def _labels_of(records: tf.data.Dataset, name: str) -> np.ndarray:
  if records.element_spec["label"].shape.rank != 0:
    raise ValueError(
      f"Expected one class per example in {name} to list its labels; found labels "
      f"of shape {records.element_spec['label'].shape}. Subsets of multi-label "
      "data are not supported: use the whole split."
    )
  batches = records.map(lambda record: record["label"]).batch(8192)
  labels = np.concatenate([np.zeros([0], np.int32), *batches.as_numpy_iterator()])
  labels.flags.writeable = False  # cached and shared by every caller
  return labels


def tfds_source(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  download: bool = True,
  label_key: str = "label",
) -> DataSource:
  """A TFDS split such as ``'train'``, ``'train[:98%]'`` or ``'test'``.

  Ids are positions in what TFDS reads for `split` without shuffling files, so they
  are only comparable between sources built with the same `split` string.
  `label_key` names the label feature (e.g. ``'labels'`` for multi-label data).
  """
  builder = tfds.builder(name, data_dir=data_dir)
  if download:
    builder.download_and_prepare()
  num_classes = builder.info.features[label_key].num_classes

  def undecoded_records() -> tf.data.Dataset:
    try:
      examples = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
      )
    except AssertionError as missing:  # how TFDS says "not prepared"
      raise FileNotFoundError(
        f"Expected prepared TFDS data for {name!r} under data_dir={data_dir!r}; "
        "found none. Pass download=True, or point data_dir at the folder that "
        f"holds {name}/<version>/."
      ) from missing
    return examples.enumerate().map(
      lambda position, example: {
        "image": example["image"],
        "label": tf.cast(example[label_key], tf.int32),
        "id": position,
      }
    )

  records = undecoded_records()
  num_examples = int(records.cardinality())
  if num_examples < 0:  # unknown or infinite: count once
    num_examples = int(records.reduce(0, lambda count, _: count + 1))
  source_name = f"tfds:{name}/{split}"
  return DataSource(
    name=source_name,
    num_examples=num_examples,
    num_classes=num_classes,
    undecoded_records=undecoded_records,
    decode_image=decode_encoded_image,
    labels=functools.cache(lambda: _labels_of(undecoded_records(), source_name)),
  )


def _undecodable(paths: list[str]) -> list[int]:
  """Indices of the files TF's own decoder rejects, found in one parallel pass.

  The pass is deterministic, so a failure arrives at the position of its file; the
  pass then resumes after it. Corrupt files are rare, so there are few restarts.
  """
  bad, start = [], 0
  while start < len(paths):
    shapes = tf.data.Dataset.from_tensor_slices(paths[start:]).map(
      lambda path: tf.shape(decode_encoded_image(tf.io.read_file(path))),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    decoded = 0
    try:
      for _ in shapes:
        decoded += 1
      break
    except tf.errors.OpError:
      bad.append(start + decoded)
      start += decoded + 1
  return bad


def image_folder_source(
  root: str | os.PathLike, split: str, *, skip_corrupt: bool = False
) -> DataSource:
  """Images laid out as ``root/<split>/<class_name>/*.jpg|jpeg|png``.

  Classes are the sorted class-folder names found under *any* split of `root`, so
  train and test agree on label numbers even when a split lacks a class. Files are
  sorted, which fixes the ids. Every image is decoded once here, by the decoder the
  pipeline uses: an unreadable file raises an error naming it, or with
  ``skip_corrupt=True`` is left out, logged and listed in `skipped_files`.
  """
  root = Path(root)
  split_dir = root / split
  if not split_dir.is_dir():
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise FileNotFoundError(
      f"Expected a folder {split_dir} holding one folder per class; found the "
      f"splits {found} under {root}. Check root and split."
    )
  class_names = sorted(
    {c.name for s in root.iterdir() if s.is_dir() for c in s.iterdir() if c.is_dir()}
  )
  paths, labels = [], []
  for label, class_name in enumerate(class_names):
    class_dir = split_dir / class_name
    files = sorted(class_dir.iterdir()) if class_dir.is_dir() else []
    images = [str(f) for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    paths += images
    labels += [label] * len(images)
  if not paths:
    raise FileNotFoundError(
      f"Expected {'/'.join(IMAGE_SUFFIXES)} files in class folders under "
      f"{split_dir}; found none."
    )

  bad = _undecodable(paths)
  skipped = tuple(paths[i] for i in bad)
  if skipped and not skip_corrupt:
    raise ValueError(
      f"Expected decodable JPEG/PNG images; {len(skipped)} in {split_dir} cannot be "
      f"read, e.g. {skipped[0]}. Fix or remove them, or pass skip_corrupt=True."
    )
  if skipped:
    logging.warning(
      "Skipped %d unreadable images in %s: %s", len(skipped), split_dir, skipped
    )
  keep = np.ones(len(paths), bool)
  keep[bad] = False
  paths = np.asarray(paths)[keep]
  labels = np.asarray(labels, np.int32)[keep]

  def undecoded_records() -> tf.data.Dataset:
    listing = tf.data.Dataset.from_tensor_slices(
      {"path": paths, "label": labels, "id": np.arange(len(paths), dtype=np.int64)}
    )
    return listing.map(
      lambda f: {"image": tf.io.read_file(f["path"]), "label": f["label"], "id": f["id"]}
    )

  return DataSource(
    name=f"folder:{split_dir}",
    num_examples=len(paths),
    num_classes=len(class_names),
    undecoded_records=undecoded_records,
    decode_image=decode_encoded_image,
    labels=lambda: labels.copy(),
    skipped_files=skipped,
  )


def array_source(
  images: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None,
  name: str = "arrays",
) -> DataSource:
  """In-memory images, uint8 [N, H, W] or [N, H, W, C] with C in 1, 3, 4, and labels [N].

  `num_classes` defaults to the largest label + 1. The arrays are held in the input
  graph, so this suits data sets up to about a gigabyte.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
    images.ndim == 4 and images.shape[-1] not in (1, 3, 4)
  ):
    raise ValueError(
      "Expected images as uint8 [N, H, W] or [N, H, W, C] with C in 1, 3, 4; found "
      f"{images.dtype} {images.shape}. Scale floats in [0, 1] with "
      "(x * 255).round().astype(np.uint8)."
    )
  if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      f"Expected integer labels of shape {images.shape[:1]} (one per image); found "
      f"{labels.dtype} {labels.shape}."
    )
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
      f"Expected labels in [0, {num_classes}); found {labels.min()}..{labels.max()}."
    )
  if images.ndim == 3:
    images = images[..., None]
  labels = labels.astype(np.int32)

  def undecoded_records() -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(
      {"image": images, "label": labels, "id": np.arange(len(labels), dtype=np.int64)}
    )

  def decode_image(image: tf.Tensor) -> tf.Tensor:
    if image.shape[-1] == 1:
      return tf.image.grayscale_to_rgb(image)
    return image[..., :3]  # drops alpha, if any

  return DataSource(
    name=name,
    num_examples=len(labels),
    num_classes=num_classes,
    undecoded_records=undecoded_records,
    decode_image=decode_image,
    labels=lambda: labels.copy(),
  )
