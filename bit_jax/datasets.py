"""Dataset names used in configs -> `DataSource`s.

* a TFDS name (`cifar10`, `oxford_iiit_pet`, ...) with its split strings;
* `sklearn_digits`: the 1,797 real 8x8 handwritten digits that scikit-learn ships, so the
  demo runs offline on a fresh machine. 'test' is a fixed random fifth (seed 0), 'train' the
  rest (the file stores digits in a repeating 0-9 order, so index-based splits are biased);
  'train[:60%]'-style slices of 'train' are random disjoint parts;
* `folder:<root>`: images in `<root>/<split>/<class>/*`.

`classes` keeps only some classes and numbers them 0..len(classes)-1 in the given order (the
demo pre-trains on digits 0-4 and transfers to digits 5-9).
"""

import re
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from bit_jax import data_sources


def digits_source(split: str) -> data_sources.DataSource:
  """Split 'train' or 'test', optionally sliced TFDS-style: 'train[:60%]', 'train[60%:]'."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  n = len(digits.target)
  order = np.random.default_rng(0).permutation(n)       # random, so slices are random too
  parts = {'test': order[:n // 5], 'train': order[n // 5:]}
  match = re.fullmatch(r'(train|test)(?:\[(\d*)%?:(\d*)%?\])?', split)
  if not match:
    raise ValueError(f"sklearn_digits has splits 'train' and 'test' (sliceable as "
                     f"'train[:60%]'), not {split!r}.")
  ids = parts[match.group(1)]
  start, stop = (int(p) * len(ids) // 100 if p else None for p in match.group(2, 3))
  keep = np.sort(ids[slice(start, stop)])
  images = np.round(digits.images[keep] * (255 / 16)).astype(np.uint8)   # 0..16 -> 0..255
  return data_sources.array_source(images, digits.target[keep], num_classes=10,
                                   name=f'sklearn_digits/{split}')


def restrict_classes(source: data_sources.DataSource,
                     classes: Sequence[int]) -> data_sources.DataSource:
  """Keep examples of `classes`, relabelled by position in `classes`, with fresh ids 0..M-1
  (ids are positions, which subsets and the pipeline rely on)."""
  classes = [int(c) for c in classes]
  all_labels = source.labels()
  unknown = sorted(set(classes) - set(range(source.num_classes)))
  if unknown:
    raise ValueError(f'classes {unknown} are not in {source.name} '
                     f'(labels 0..{source.num_classes - 1}).')
  lookup = np.full(source.num_classes, -1, np.int32)
  lookup[classes] = np.arange(len(classes), dtype=np.int32)
  new_labels = lookup[all_labels]
  new_labels = new_labels[new_labels >= 0]
  table = tf.constant(lookup)

  def undecoded_records():
    kept = source.undecoded_records().filter(lambda r: tf.gather(table, r['label']) >= 0)
    return kept.enumerate().map(
        lambda i, r: {**r, 'id': i, 'label': tf.gather(table, r['label'])})

  return data_sources.DataSource(
      name=f'{source.name}[classes={",".join(map(str, classes))}]',
      num_examples=len(new_labels), num_classes=len(classes),
      undecoded_records=undecoded_records, decode_image=source.decode_image,
      labels=lambda: new_labels)


def get_source(dataset: str, split: str, *, data_dir: Optional[str] = None,
               classes: Optional[Sequence[int]] = None,
               label_key: str = 'label') -> data_sources.DataSource:
  if dataset == 'sklearn_digits':
    source = digits_source(split)
  elif dataset.startswith('folder:'):
    source = data_sources.image_folder_source(dataset.removeprefix('folder:'), split)
  else:
    source = data_sources.tfds_source(dataset, split, data_dir=data_dir, label_key=label_key)
  return restrict_classes(source, classes) if classes else source
