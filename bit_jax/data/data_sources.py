"""Where images come from: dataset names in configs -> `DataSource`s.

* a TFDS name (`cifar10`, `oxford_iiit_pet`, ...) with its split strings (`label_key='labels'`
  for multi-label data such as ImageNet-21k);
* `sklearn_digits`: the 1,797 real 8x8 handwritten digits that scikit-learn ships, so the
  demo runs offline on a fresh machine;
* `folder:<root>`: images in `<root>/<split>/<class>/**` (any filesystem epath reads);
* numpy arrays (`array_source`), for research code and tests.

Each is a `DataSource`: one split as tf.data records ``{'image', 'label', 'id'}`` in one
fixed order, where an example's id is its position in that order (the ids `subsets.py`
draws subsets from), plus its size, its classes and, on request, all its labels as numpy.

The pipeline reads records *undecoded* (`undecoded_records`) and decodes them with
`decode_image` only after it has dropped the examples it does not use and shuffled: a
subset, another process's shard or the skipped start of a resumed epoch then costs a
record read, never an image decode. `records()` is the decoded view, for everyone else.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import re
import socket
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from bit_jax.data import dataset_names
from bit_jax.runtime import files as files_lib

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


def keep_tensorflow_off_accelerators() -> None:
  """Hide the GPUs from TensorFlow, before its first op: JAX owns the accelerators, and a TF
  that initialised them too would take most of their memory for tf.data, which runs on CPU.

  Called by every command line at its start (`command_line.run`) and by the sources here
  before they build a tf.data pipeline (for research code that skips the command lines).
  Once TF has initialised its devices it can no longer be told, and this does nothing.
  """
  try:
    tf.config.set_visible_devices([], 'GPU')
  except (RuntimeError, ValueError):  # TF already initialised its devices
    pass


def decode_encoded_image(encoded: tf.Tensor) -> tf.Tensor:
  """JPEG/PNG bytes -> uint8 [H, W, 3]; grayscale is repeated, alpha dropped."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One split of labelled images, always read in the same order.

  `undecoded_records()` gives ``{'image': <what decode_image takes>, 'label': int32 (a list
  of them with `multi_label`), 'id': int64}``; `labels` returns the int label of every
  example in id order (a pass over the split for TFDS; in memory when `labels_in_memory`).
  """

  name: str
  num_examples: int
  num_classes: int
  undecoded_records: Callable[[], tf.data.Dataset]
  decode_image: Callable[[tf.Tensor], tf.Tensor]
  labels: Callable[[], np.ndarray]
  skipped_files: tuple[str, ...] = ()  # unreadable images left out (image folders)
  class_names: tuple[str, ...] | None = None  # label i is class_names[i], where known
  multi_label: bool = False  # several labels per example (ImageNet-21k)
  labels_in_memory: bool = False  # `labels()` costs nothing: no pass over the data

  def records(self) -> tf.data.Dataset:
    """``{'image': uint8 [H, W, 3], 'label': int32, 'id': int64}`` in id order."""
    return self.undecoded_records().map(
      lambda record: {**record, 'image': self.decode_image(record['image'])},
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )


def _labels_of(records: tf.data.Dataset, name: str) -> np.ndarray:
  if records.element_spec['label'].shape.rank != 0:
    raise ValueError(
      f'Expected one class per example in {name} to list its labels; its examples have '
      'several. Subsets, holdouts and class filters need one label per example: train '
      'on the whole split.'
    )
  batches = records.map(lambda record: record['label']).batch(8192)
  labels = np.concatenate([np.zeros([0], np.int32), *batches.as_numpy_iterator()])
  labels.flags.writeable = False  # cached and shared by every caller
  return labels


OUR_DATASETS = ('sklearn_digits', 'folder:<root>')
TFDS_CATALOG = 'https://www.tensorflow.org/datasets/catalog/overview'
# Where TFDS downloads from when a dataset is not prepared; checked before a download so an
# offline machine fails in seconds instead of retrying for minutes.
DOWNLOAD_HOST = ('storage.googleapis.com', 443)


def _reachable(host: tuple[str, int], timeout: float = 5.0) -> bool:
  try:
    with socket.create_connection(host, timeout=timeout):
      return True
  except OSError:
    return False


def _tfds_builder(name: str, data_dir):
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(dataset_names.base_name(name), tfds.list_builders(), n=3)
    hint = f' (close: {", ".join(close)})' if close else ''
    raise ValueError(
      f'Unknown dataset {name!r}: neither ours ({", ".join(OUR_DATASETS)}) nor a TFDS '
      f'name{hint}. TFDS names: {TFDS_CATALOG} or tfds.list_builders().'
    ) from None


def _label_feature(builder, label_key: str) -> tuple[int, tuple[str, ...], bool]:
  """(num_classes, class names, multi_label) of the feature `label_key`."""
  features = builder.info.features
  feature = features[label_key] if label_key in features else None
  multi_label = isinstance(feature, tfds.features.Sequence)
  if multi_label:
    feature = feature.feature
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ValueError(
      f'Expected {builder.name!r} to have a ClassLabel feature {label_key!r} (or a '
      f'Sequence of them); its features are {sorted(features)}. Set label_key.'
    )
  return feature.num_classes, tuple(feature.names), multi_label


def _prepared_builder(name: str, data_dir, download: bool):
  """The TFDS builder of `name`, downloaded and prepared first where `download` allows."""
  builder = _tfds_builder(name, data_dir)
  if download and not builder.is_prepared():
    if not _reachable(DOWNLOAD_HOST):
      raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} and the '
        f'download host {DOWNLOAD_HOST[0]} cannot be reached. Prepare it on a machine '
        f'with network access (tfds.builder({name!r}).download_and_prepare()) and point '
        'data_dir at the folder that holds it.'
      )
    builder.download_and_prepare()
  return builder


def tfds_source(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  download: bool = True,
  label_key: str = 'label',
) -> DataSource:
  """A TFDS split such as ``'train'``, ``'train[:98%]'`` or ``'test'``.

  Ids are positions in what TFDS reads for `split` without shuffling files, so they
  are only comparable between sources built with the same `split` string.
  `label_key` names the label feature (e.g. ``'labels'`` for multi-label data).
  """
  keep_tensorflow_off_accelerators()
  builder = _prepared_builder(name, data_dir, download)
  num_classes, class_names, multi_label = _label_feature(builder, label_key)

  def undecoded_records() -> tf.data.Dataset:
    try:
      examples = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
      )
    except AssertionError as missing:  # how TFDS says "not prepared"
      raise FileNotFoundError(
        f'Expected prepared TFDS data for {name!r} under data_dir={data_dir!r}; '
        'found none. Pass download=True, or point data_dir at the folder that '
        f'holds {name}/<version>/.'
      ) from missing
    return examples.enumerate().map(
      lambda position, example: {
        'image': example['image'],
        'label': tf.cast(example[label_key], tf.int32),
        'id': position,
      }
    )

  records = undecoded_records()
  num_examples = int(records.cardinality())
  if num_examples < 0:  # unknown or infinite: count once
    num_examples = int(records.reduce(0, lambda count, _: count + 1))
  source_name = f'tfds:{name}/{split}'
  return DataSource(
    name=source_name,
    num_examples=num_examples,
    num_classes=num_classes,
    undecoded_records=undecoded_records,
    decode_image=decode_encoded_image,
    labels=functools.cache(lambda: _labels_of(undecoded_records(), source_name)),
    class_names=class_names,
    multi_label=multi_label,
  )


def undecodable(paths: list[str]) -> list[int]:
  """Indices of the files TF's own decoder rejects, found in one parallel pass.

  The pass is deterministic, so a failure arrives at the position of its file; the
  pass then resumes after it. Corrupt files are rare, so there are few restarts.
  """
  keep_tensorflow_off_accelerators()
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


def images_under(directory: epath.Path, within: epath.Path | None = None) -> list[epath.Path]:
  """Image files anywhere below `directory`, sorted by path (nested folders included, as
  torchvision's ImageFolder reads them). With `within` (a split's folder), a symlinked file
  that leads out of it is left out, and named in a warning, as are the symlinked folders
  that are not followed."""
  found, left_out = [], []
  for folder, folders, files in directory.walk():
    images = [folder / f for f in files if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    if within is not None:
      left_out += [f for f in images if leaves(f, within)]
      left_out += [folder / d for d in folders if os.path.islink(folder / d)]
      images = [f for f in images if not leaves(f, within)]
    found += images
  if left_out:
    logging.warning(
      'Left out %d symlinks in %s that leave %s or are folders (not followed), e.g. %s',
      len(left_out),
      directory,
      within,
      left_out[0],
    )
  return sorted(found, key=str)


def leaves(path, within) -> bool:
  """Whether `path` is a symlink that leads out of the folder `within`, or a link to a folder
  that holds the link itself (a loop). Cloud storage has no symlinks."""
  if not files_lib.is_local(path) or not os.path.islink(path):
    return False
  target, inside = os.path.realpath(path), os.path.realpath(within)
  parent = os.path.realpath(os.path.dirname(path))
  loops = parent == target or parent.startswith(target + os.sep)
  return loops or not target.startswith(inside + os.sep)


def _is_class(folder: epath.Path, split_dir: epath.Path) -> bool:
  """A class folder: a folder of the split, not a symlink that leaves it or loops back (which
  would make a class of another split's or every class's images)."""
  if not folder.is_dir():
    return False
  if leaves(folder, split_dir):
    logging.warning(
      'Left out %s: a symlink to %s, which is not a folder inside %s (a class must be).',
      folder,
      os.path.realpath(folder),
      split_dir,
    )
    return False
  return True


def image_folder_source(
  root: str | os.PathLike, split: str, *, skip_corrupt: bool = False
) -> DataSource:
  """Images laid out as ``root/<split>/<class_name>/**/*.jpg|jpeg|png``.

  Classes are the sorted class-folder names found under *any* split of `root`, so
  train and test agree on label numbers even when a split lacks a class; a class folder
  without images in `split` is an error (it would be a class never seen). Images in
  subfolders of a class folder belong to it; files beside the class folders are named in
  a warning and left out. Files are sorted, which fixes the ids. Every image is decoded
  once here, by the decoder the pipeline uses: an unreadable file raises an error naming
  it, or with ``skip_corrupt=True`` is left out, logged and listed in `skipped_files`.
  """
  root = epath.Path(root)
  split_dir = _split_folder(root, split)
  class_names = folder_class_names(root)
  _warn_of_loose_files(split_dir)
  paths, labels = _class_images(split_dir, class_names)
  readable, skipped = decodable(paths)
  _check_skipped(skipped, split_dir, skip_corrupt)
  return file_source(
    f'folder:{split_dir}',
    np.asarray(paths)[readable],
    np.asarray(labels, np.int32)[readable],
    class_names,
    skipped_files=skipped,
  )


def _split_folder(root: epath.Path, split: str) -> epath.Path:
  split_dir = root / split
  if not split_dir.is_dir():
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise FileNotFoundError(
      f'Expected a folder {split_dir} holding one folder per class; found the '
      f'splits {found} under {root}. Check root and split.'
    )
  return split_dir


def folder_class_names(root: epath.Path) -> tuple[str, ...]:
  """The sorted names of the class folders under every split of `root`."""
  return tuple(
    sorted({c.name for s in root.iterdir() if s.is_dir() for c in s.iterdir() if _is_class(c, s)})
  )


def _warn_of_loose_files(split_dir: epath.Path) -> None:
  loose = [p.name for p in split_dir.iterdir() if not p.is_dir()]
  if loose:
    logging.warning(
      'Left out %d files in %s that are not in a class folder, e.g. %s',
      len(loose),
      split_dir,
      loose[0],
    )


def _class_images(split_dir: epath.Path, class_names) -> tuple[list[str], list[int]]:
  """(the image paths in the class folders of `split_dir`, their labels), in class order;
  an error where a class folder holds no image or no folder does."""
  paths, labels, empty = [], [], []
  for label, class_name in enumerate(class_names):
    class_dir = split_dir / class_name
    if not _is_class(class_dir, split_dir):
      continue
    images = [str(f) for f in images_under(class_dir, within=split_dir)]
    if not images:
      empty.append(class_name)
    paths += images
    labels += [label] * len(images)
  if empty:
    raise ValueError(
      f'Expected {"/".join(IMAGE_SUFFIXES)} images in every class folder of {split_dir}; '
      f'{", ".join(empty)} hold none. Add images or remove the folders (an empty folder '
      'would be a class that is never trained or tested).'
    )
  if not paths:
    raise FileNotFoundError(
      f'Expected {"/".join(IMAGE_SUFFIXES)} files in class folders under {split_dir}; found none.'
    )
  return paths, labels


def decodable(paths: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
  """(a mask of the `paths` TF's decoder reads, the paths it rejects), in one pass."""
  bad = undecodable(list(paths))
  readable = np.ones(len(paths), bool)
  readable[bad] = False
  return readable, tuple(paths[i] for i in bad)


def _check_skipped(skipped: tuple[str, ...], split_dir, skip_corrupt: bool) -> None:
  if skipped and not skip_corrupt:
    raise ValueError(
      f'Expected decodable JPEG/PNG images; {len(skipped)} in {split_dir} cannot be '
      f'read, e.g. {skipped[0]}. Fix or remove them, or set skip_corrupt=True '
      '(--config.skip_corrupt=True) to leave them out.'
    )
  if skipped:
    logging.warning('Skipped %d unreadable images in %s: %s', len(skipped), split_dir, skipped)


def file_source(
  name: str,
  paths: Sequence[str],
  labels: Sequence[int],
  class_names: Sequence[str],
  *,
  skipped_files: tuple[str, ...] = (),
) -> DataSource:
  """Image files as a `DataSource`: example i is the file ``paths[i]`` with label
  ``labels[i]`` (-1 for none) and id i. The one reader of image files, for image folders
  and for the images `predict` is given."""
  keep_tensorflow_off_accelerators()
  paths, labels = np.asarray(paths, str), np.asarray(labels, np.int32)

  def undecoded_records() -> tf.data.Dataset:
    listing = tf.data.Dataset.from_tensor_slices(
      {'path': paths, 'label': labels, 'id': np.arange(len(paths), dtype=np.int64)}
    )
    return listing.map(
      lambda f: {'image': tf.io.read_file(f['path']), 'label': f['label'], 'id': f['id']}
    )

  return DataSource(
    name=name,
    num_examples=len(paths),
    num_classes=len(class_names),
    undecoded_records=undecoded_records,
    decode_image=decode_encoded_image,
    labels=lambda: labels.copy(),
    skipped_files=skipped_files,
    class_names=tuple(class_names),
    labels_in_memory=True,
  )


def array_source(
  images: np.ndarray,
  labels: np.ndarray,
  *,
  num_classes: int | None = None,
  name: str = 'arrays',
  class_names: Sequence[str] | None = None,
) -> DataSource:
  """In-memory images, uint8 [N, H, W] or [N, H, W, C] with C in 1, 3, 4, and labels [N].

  `num_classes` defaults to the largest label + 1 (or the number of `class_names`). The
  arrays are held in the input graph, so this suits data sets up to about a gigabyte.
  """
  keep_tensorflow_off_accelerators()
  if num_classes is None and class_names is not None:
    num_classes = len(class_names)
  images, labels = _checked_images(images), np.asarray(labels)
  if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      f'Expected integer labels of shape {images.shape[:1]} (one per image); found '
      f'{labels.dtype} {labels.shape}.'
    )
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
      f'Expected labels in [0, {num_classes}); found {labels.min()}..{labels.max()}.'
    )
  if images.ndim == 3:
    images = images[..., None]
  labels = labels.astype(np.int32)

  def undecoded_records() -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': labels, 'id': np.arange(len(labels), dtype=np.int64)}
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
    class_names=None if class_names is None else tuple(class_names),
    labels_in_memory=True,
  )


def _checked_images(images) -> np.ndarray:
  images = np.asarray(images)
  if (
    images.dtype != np.uint8
    or images.ndim not in (3, 4)
    or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4))
  ):
    raise ValueError(
      'Expected images as uint8 [N, H, W] or [N, H, W, C] with C in 1, 3, 4; found '
      f'{images.dtype} {images.shape}. Scale floats in [0, 1] with '
      '(x * 255).round().astype(np.uint8).'
    )
  return images


def digits_source(split: str) -> DataSource:
  """scikit-learn's digits. 'test' is a fixed random fifth (seed 0), 'train' the rest (the
  file stores digits in a repeating 0-9 order, so index-based splits would be biased);
  'train[:60%]'-style slices of either are random disjoint parts."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  n = len(digits.target)
  order = np.random.default_rng(0).permutation(n)  # random, so slices are random too
  parts = {'test': order[: n // 5], 'train': order[n // 5 :]}
  match = re.fullmatch(r'(train|test)(?:\[(\d*)%?:(\d*)%?\])?', split)
  if not match:
    raise ValueError(
      f"sklearn_digits has splits 'train' and 'test' (sliceable as 'train[:60%]'), not {split!r}."
    )
  ids = parts[match.group(1)]
  start, stop = (int(p) * len(ids) // 100 if p else None for p in match.group(2, 3))
  keep = np.sort(ids[slice(start, stop)])
  images = np.round(digits.images[keep] * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
  return array_source(
    images,
    digits.target[keep],
    name=f'sklearn_digits/{split}',
    class_names=[str(d) for d in range(10)],
  )


def restrict_classes(source: DataSource, classes: Sequence[int]) -> DataSource:
  """Keep examples of `classes`, relabelled by position in `classes`, with fresh ids 0..M-1
  (ids are positions, which subsets and the pipeline rely on)."""
  classes = [int(c) for c in classes]
  all_labels = source.labels()
  unknown = sorted(set(classes) - set(range(source.num_classes)))
  if unknown:
    raise ValueError(
      f'classes {unknown} are not in {source.name} (labels 0..{source.num_classes - 1}).'
    )
  lookup = np.full(source.num_classes, -1, np.int32)
  lookup[classes] = np.arange(len(classes), dtype=np.int32)
  new_labels = lookup[all_labels]
  new_labels = new_labels[new_labels >= 0]
  table = tf.constant(lookup)

  def undecoded_records():
    kept = source.undecoded_records().filter(lambda r: tf.gather(table, r['label']) >= 0)
    return kept.enumerate().map(lambda i, r: {**r, 'id': i, 'label': tf.gather(table, r['label'])})

  names = source.class_names
  return dataclasses.replace(
    source,
    name=f'{source.name}[classes={",".join(map(str, classes))}]',
    num_examples=len(new_labels),
    num_classes=len(classes),
    undecoded_records=undecoded_records,
    labels=lambda: new_labels,
    class_names=None if names is None else tuple(names[c] for c in classes),
    labels_in_memory=True,
  )


def get_source(
  dataset: str,
  split: str,
  *,
  data_dir: str | None = None,
  classes: Sequence[int] | None = None,
  label_key: str = 'label',
  skip_corrupt: bool = False,
) -> DataSource:
  """The `DataSource` of a config's dataset name and split (see the module docstring)."""
  if dataset == 'sklearn_digits':
    source = digits_source(split)
  elif dataset.startswith('folder:'):
    source = image_folder_source(dataset.removeprefix('folder:'), split, skip_corrupt=skip_corrupt)
  else:
    source = tfds_source(dataset, split, data_dir=data_dir, label_key=label_key)
  return restrict_classes(source, classes) if classes else source
