"""Tiny TFDS datasets built in tests, through TFDS's own builder machinery: the cases the
bundled data lacks (several labels per example; a test split without labels, as TFDS
serves ImageNet's). Defining a builder class registers its snake_case name with TFDS."""

import numpy as np
import tensorflow_datasets as tfds

IMAGE = (16, 16, 3)


class MultiLabelImages(tfds.core.GeneratorBasedBuilder):
  """'full': 48 random images with 1 to 3 of 6 classes each, ImageNet-21k style."""

  VERSION = tfds.core.Version('1.0.0')
  NUM_CLASSES = 6

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=IMAGE),
          'labels': tfds.features.Sequence(tfds.features.ClassLabel(num_classes=6)),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'full': self._generate_examples(48)}

  def _generate_examples(self, n):
    rng = np.random.default_rng(0)
    for i in range(n):
      labels = sorted(rng.choice(self.NUM_CLASSES, rng.integers(1, 4), replace=False))
      yield i, {'image': rng.integers(0, 256, IMAGE, np.uint8), 'labels': labels}


class UnlabelledTest(tfds.core.GeneratorBasedBuilder):
  """'train' and 'validation' labelled (3 classes), 'test' all -1, as ImageNet's."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=IMAGE),
          'label': tfds.features.ClassLabel(num_classes=3),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
      'train': self._generate_examples(24, True),
      'validation': self._generate_examples(9, True),
      'test': self._generate_examples(9, False),
    }

  def _generate_examples(self, n, labelled):
    rng = np.random.default_rng(n)
    for i in range(n):
      yield i, {'image': rng.integers(0, 256, IMAGE, np.uint8), 'label': i % 3 if labelled else -1}


def prepare(builder_class, data_dir) -> str:
  builder_class(data_dir=str(data_dir)).download_and_prepare()
  return builder_class.name
