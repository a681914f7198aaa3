"""Tests for bit_jax/data/data_sources.py.

Oracles: TFDS's own reader (decoded images and labels, in its unshuffled order), PIL
(the pixels we wrote into image files), and the file layout (a file's class folder is
its label).
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from bit_jax.data import data_sources

CIFAR_DIR = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'tfds'


def _all(dataset):
  return list(dataset.as_numpy_iterator())


def test_tfds_source_matches_tfds_reader_on_mock_data():
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    source = data_sources.tfds_source('cifar10', 'train', download=False)
    records = _all(source.records())
    oracle = _all(tfds.load('cifar10', split='train', shuffle_files=False))
    labels = source.labels()
  assert source.num_examples == 12 and source.num_classes == 10
  assert [r['id'] for r in records] == list(range(12))
  for record, example in zip(records, oracle, strict=True):
    assert record['image'].dtype == np.uint8 and record['image'].shape == (32, 32, 3)
    np.testing.assert_array_equal(record['image'], example['image'])
    assert record['label'] == example['label']
  np.testing.assert_array_equal(labels, [e['label'] for e in oracle])


@pytest.fixture(scope='module')
def cifar_dir():
  if not (CIFAR_DIR / 'cifar10').is_dir():
    pytest.skip(f'CIFAR-10 subset not found under {CIFAR_DIR}')
  return CIFAR_DIR


def test_tfds_source_on_real_cifar(cifar_dir):
  train = data_sources.tfds_source('cifar10', 'train', data_dir=cifar_dir, download=False)
  part = data_sources.tfds_source('cifar10', 'train[:98%]', data_dir=cifar_dir, download=False)
  assert (train.num_examples, train.num_classes) == (5085, 10)
  assert part.num_examples == 4983
  oracle = np.array(
    [
      label
      for _, label in tfds.as_numpy(
        tfds.load('cifar10', split='train', data_dir=cifar_dir, download=False, as_supervised=True)
      )
    ]
  )
  np.testing.assert_array_equal(train.labels(), oracle)
  np.testing.assert_array_equal(part.labels(), oracle[:4983])  # a slice keeps positions


def test_tfds_source_without_data_says_how_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='download=True'):
    data_sources.tfds_source('cifar10', 'train', data_dir=tmp_path, download=False)


def _write(path: Path, pixels: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path)


@pytest.fixture
def image_folder(tmp_path):
  """train/{cat,dog,emu}, test/{cat,emu}: 'dog' only in train, mixed kinds of image."""
  rng = np.random.default_rng(0)
  shapes = {
    'train/cat/b.png': (5, 6, 3),
    'train/cat/a.png': (7, 4),  # grayscale
    'train/dog/c.png': (3, 3, 4),  # RGBA
    'test/cat/e.png': (4, 4, 3),
    'test/emu/f.png': (4, 4, 3),
  }
  pixels = {name: rng.integers(0, 256, shape, np.uint8) for name, shape in shapes.items()}
  pixels['train/emu/d.jpg'] = np.full((8, 8, 3), 200, np.uint8)
  for name, image in pixels.items():
    _write(tmp_path / name, image)
  (tmp_path / 'train/emu/notes.txt').write_text('not an image')
  return tmp_path, pixels


def test_image_folder_ids_labels_and_channels(image_folder):
  root, pixels = image_folder
  train = data_sources.image_folder_source(root, 'train')
  test = data_sources.image_folder_source(root, 'test')
  assert train.num_classes == test.num_classes == 3  # cat, dog, emu in both
  records = _all(train.records())
  assert [r['id'] for r in records] == [0, 1, 2, 3]
  assert [r['label'] for r in records] == [0, 0, 1, 2]
  np.testing.assert_array_equal(train.labels(), [0, 0, 1, 2])
  np.testing.assert_array_equal(test.labels(), [0, 2])  # emu is 2, not 1
  gray, color, rgba, jpeg = (r['image'] for r in records)  # a.png sorts before b.png
  np.testing.assert_array_equal(gray, np.repeat(pixels['train/cat/a.png'][..., None], 3, -1))
  np.testing.assert_array_equal(color, pixels['train/cat/b.png'])
  np.testing.assert_array_equal(rgba, pixels['train/dog/c.png'][..., :3])
  assert jpeg.shape == (8, 8, 3) and np.abs(jpeg.astype(int) - 200).max() <= 2


def test_corrupt_image_is_named_or_skipped_and_counted(image_folder):
  root, _ = image_folder
  (root / 'train/cat/zz_truncated.png').write_bytes((root / 'train/cat/b.png').read_bytes()[:40])
  (root / 'train/dog/bad.jpg').write_bytes(b'not a jpeg at all')
  with pytest.raises(ValueError, match=r'2 in .* cannot be read, e\.g\. .*zz_truncated\.png'):
    data_sources.image_folder_source(root, 'train')

  source = data_sources.image_folder_source(root, 'train', skip_corrupt=True)
  assert [Path(f).name for f in source.skipped_files] == ['zz_truncated.png', 'bad.jpg']
  assert source.num_examples == 4
  # No label shifts: every kept image still carries the label of its folder.
  assert [r['label'] for r in _all(source.records())] == [0, 0, 1, 2]


def test_array_source_grayscale_becomes_rgb_and_bad_input_is_explained():
  images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  source = data_sources.array_source(images, np.array([1, 0]))
  records = _all(source.records())
  assert source.num_classes == 2 and [r['id'] for r in records] == [0, 1]
  np.testing.assert_array_equal(records[1]['image'], np.repeat(images[1][..., None], 3, -1))
  with pytest.raises(ValueError, match='astype'):
    data_sources.array_source(images / 255.0, np.array([1, 0]))
  with pytest.raises(ValueError, match=r'labels in \[0, 2\)'):
    data_sources.array_source(images, np.array([1, 2]), num_classes=2)


# Dataset names -> sources. Oracle: scikit-learn's own digits arrays.


def images_of(source):
  return np.stack([r['image'] for r in source.records().as_numpy_iterator()])


def test_digits_slices_are_disjoint_and_cover_train():
  a, b = data_sources.digits_source('train[:60%]'), data_sources.digits_source('train[60%:]')
  train, test = data_sources.digits_source('train'), data_sources.digits_source('test')
  assert a.num_examples + b.num_examples == train.num_examples
  assert train.num_examples + test.num_examples == 1797
  flat = lambda s: {x.tobytes() for x in images_of(s)}
  assert not flat(a) & flat(b) and not flat(train) & flat(test)
  digits = load_digits()  # pixels 0..16 scaled to 0..255, grey -> 3 channels
  first = images_of(test)[0]
  assert first.shape == (8, 8, 3) and (first[..., 0] == first[..., 2]).all()
  matches = [
    i
    for i, img in enumerate(digits.images)
    if np.array_equal(np.round(img * 255 / 16).astype(np.uint8), first[..., 0])
  ]
  assert digits.target[matches[0]] == test.labels()[0]
  with pytest.raises(ValueError, match='sliceable'):
    data_sources.digits_source('validation')


def test_restrict_classes_relabels_in_order_with_contiguous_ids():
  full = data_sources.digits_source('test')
  only = data_sources.restrict_classes(full, [7, 3])
  records = list(only.records().as_numpy_iterator())
  assert [r['id'] for r in records] == list(range(only.num_examples))
  expected = np.array([{7: 0, 3: 1}[label] for label in full.labels() if label in (7, 3)])
  np.testing.assert_array_equal(only.labels(), expected)
  np.testing.assert_array_equal([r['label'] for r in records], expected)
  assert only.num_classes == 2
  with pytest.raises(ValueError, match='not in'):
    data_sources.restrict_classes(full, [12])


def test_unprepared_tfds_data_fails_fast_when_the_download_host_is_unreachable(
  tmp_path, monkeypatch
):
  import socket
  import time

  with socket.socket() as s:  # a port on this machine that nothing listens on
    s.bind(('127.0.0.1', 0))
    closed = s.getsockname()
  monkeypatch.setattr(data_sources, 'DOWNLOAD_HOST', closed)
  started = time.time()
  with pytest.raises(FileNotFoundError, match="'mnist' is not prepared .* cannot be reached"):
    data_sources.tfds_source('mnist', 'train', data_dir=tmp_path)
  assert time.time() - started < 30


def test_unknown_dataset_is_a_short_message_with_close_names():
  with pytest.raises(ValueError) as error:
    data_sources.get_source('cifar1O', 'train')
  message = str(error.value)
  assert "Unknown dataset 'cifar1O'" in message and 'cifar10' in message
  assert len(message) < 400 and 'sklearn_digits' in message


def test_image_folder_reads_nested_images_and_refuses_empty_class_folders(image_folder):
  root, pixels = image_folder
  _write(root / 'train/dog/puppies/g.png', np.zeros((4, 4, 3), np.uint8))
  (root / 'train/loose.png').write_bytes((root / 'train/cat/b.png').read_bytes())
  train = data_sources.image_folder_source(root, 'train')
  assert train.num_examples == 5 and train.class_names == ('cat', 'dog', 'emu')
  np.testing.assert_array_equal(train.labels(), [0, 0, 1, 1, 2])  # nested: still a dog
  (root / 'train/yak').mkdir()
  with pytest.raises(ValueError, match='yak hold none'):
    data_sources.image_folder_source(root, 'train')


def test_skip_corrupt_is_a_config_field_that_reaches_the_folder(image_folder):
  from test_train import tiny_config

  from bit_jax.recipe import plan
  from bit_jax.runtime.errors import ConfigError

  root, _ = image_folder
  (root / 'train/cat/zz_truncated.png').write_bytes((root / 'train/cat/b.png').read_bytes()[:40])
  config = tiny_config(dataset=f'folder:{root}', classes=None, batch_size=8)
  with pytest.raises(ConfigError, match='--config.skip_corrupt=True'):
    plan.resolve(config)
  config.skip_corrupt = True
  [phase] = plan.resolve(config).phases
  assert [Path(f).name for f in phase.data.train.skipped_files] == ['zz_truncated.png']
  assert phase.settings.num_examples == 4


def test_image_folder_symlinks_that_leave_the_split_or_loop_are_left_out(image_folder, caplog):
  root, _ = image_folder
  outside = root / 'elsewhere'
  _write(outside / 'x.png', np.zeros((4, 4, 3), np.uint8))
  (root / 'train/loop').symlink_to('.')  # a class of every class's images
  (root / 'train/ext').symlink_to(outside)  # a class from outside the split
  (root / 'train/cat/sub').symlink_to('../..')  # a folder link inside a class
  (root / 'train/cat/far.png').symlink_to(outside / 'x.png')
  (root / 'train/cat/near.png').symlink_to(root / 'train/dog/c.png')  # stays in the split
  with caplog.at_level('WARNING'):
    train = data_sources.image_folder_source(root, 'train')
  assert train.class_names == ('cat', 'dog', 'emu') and train.num_examples == 5
  np.testing.assert_array_equal(train.labels(), [0, 0, 0, 1, 2])  # a, b, near; c; d
  warned = caplog.text
  assert 'train/loop: a symlink to' in warned and 'train/ext: a symlink to' in warned
  assert 'Left out 2 symlinks in' in warned and 'far.png' in warned
