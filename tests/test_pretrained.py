"""Official checkpoint loading. Oracle: timm's logits for the same `.npz` (tools/make_golden.py)."""

import urllib.error

import jax
import numpy as np
import pytest
from conftest import TEST_DATA

from bit_jax import models
from bit_jax.models import download, pretrained

CHECKPOINT = TEST_DATA / 'bit_small_official.npz'
GOLDEN = TEST_DATA / 'golden_bit_small.npz'


def official_arrays():
  with np.load(CHECKPOINT) as f:
    return {k: f[k] for k in f.files}


def test_logits_match_timm():
  model, params = pretrained.load_pretrained(CHECKPOINT)
  golden = np.load(GOLDEN)
  apply = jax.jit(model.apply, static_argnames='return_intermediates')  # op by op: ~300 compiles
  logits, out = apply({'params': params}, golden['images'], return_intermediates=True)
  assert logits.shape == golden['logits'].shape == (3, 10)
  assert np.abs(np.asarray(logits) - golden['logits']).max() <= 1e-4
  assert np.abs(np.asarray(out['pre_logits']) - golden['pre_logits']).max() <= 1e-4


def test_head_policy():
  golden = np.load(GOLDEN)
  x = golden['images'][:1]
  model, params = pretrained.load_pretrained(CHECKPOINT)  # its own head
  np.testing.assert_allclose(
    jax.jit(model.apply)({'params': params}, x), golden['logits'][:1], atol=1e-4
  )
  # A 10-class task from a 10-class checkpoint still gets a fresh zero head (BiT fine-tuning
  # re-initialises it for every new task) unless the caller asks to keep it.
  model, params = pretrained.load_pretrained(CHECKPOINT, num_classes=10)
  assert model.num_classes == 10
  np.testing.assert_array_equal(params['head']['kernel'], 0)
  np.testing.assert_array_equal(params['head']['bias'], 0)
  model, params = pretrained.load_pretrained(CHECKPOINT, num_classes=10, keep_head=True)
  np.testing.assert_allclose(
    jax.jit(model.apply)({'params': params}, x), golden['logits'][:1], atol=1e-4
  )
  with pytest.raises(pretrained.CheckpointMismatchError, match='keeping its head'):
    pretrained.load_pretrained(CHECKPOINT, num_classes=5, keep_head=True)
  model, params = pretrained.load_pretrained(CHECKPOINT, num_classes=5)  # new zero head
  assert jax.jit(model.apply)({'params': params}, x).shape == (1, 5)
  np.testing.assert_array_equal(params['head']['kernel'], 0)
  model, params = pretrained.load_pretrained(CHECKPOINT, num_classes=0)  # features only
  assert 'head' not in params
  np.testing.assert_allclose(
    jax.jit(model.apply)({'params': params}, x), golden['pre_logits'][:1], atol=1e-4
  )


def test_round_trip_is_bit_exact(tmp_path):
  model, params = pretrained.load_pretrained(CHECKPOINT)
  pretrained.save_npz(tmp_path / 'back.npz', params)
  original, back = official_arrays(), pretrained.read_npz(tmp_path / 'back.npz')
  assert sorted(original) == sorted(back)
  for key in original:
    assert original[key].dtype == back[key].dtype and original[key].shape == back[key].shape
    np.testing.assert_array_equal(original[key], back[key], err_msg=key)


def test_mismatched_file_lists_every_problem():
  arrays = official_arrays()
  del arrays['resnet/block2/unit01/b/group_norm/beta']
  arrays['resnet/block9/extra'] = np.zeros(3, np.float32)
  arrays['resnet/block3/unit01/c/standardized_conv2d/kernel'] = np.zeros(
    (1, 1, 128, 64), np.float32
  )
  model = models.ResNetV2(units=(1, 1, 1, 1), width=0.5, num_classes=10)
  with pytest.raises(pretrained.CheckpointMismatchError) as error:
    pretrained.npz_to_params(arrays, model, keep_head=True)
  message = str(error.value)
  assert 'resnet/block2/unit01/b/group_norm/beta' in message and '(64,)' in message
  assert 'resnet/block9/extra' in message
  assert 'resnet/block3/unit01/c/standardized_conv2d/kernel' in message
  assert '(1, 1, 128, 64)' in message and '(1, 1, 128, 512)' in message
  with pytest.raises(pretrained.CheckpointMismatchError, match='missing'):
    pretrained.npz_to_params(
      official_arrays(), models.create_model('R50x1', num_classes=10), keep_head=False
    )


def test_numbered_conv_spelling_is_accepted():
  arrays = {
    k.replace('standardized_conv2d', 'standardized_conv2d_3'): v
    for k, v in official_arrays().items()
  }
  model = models.ResNetV2(units=(1, 1, 1, 1), width=0.5, num_classes=10)
  params = pretrained.npz_to_params(arrays, model, keep_head=True)
  np.testing.assert_array_equal(
    params['block1']['unit01']['conv2']['kernel'],
    arrays['resnet/block1/unit01/b/standardized_conv2d_3/kernel'],
  )


def test_timm_state_dict_import_and_export():
  timm = pytest.importorskip('timm_oracle').import_timm()
  import torch

  arrays = official_arrays()
  small = timm.models.resnetv2.ResNetV2(
    layers=[1, 1, 1, 1],
    channels=(128, 256, 512, 1024),
    num_classes=10,
    stem_chs=32,
    stem_type='fixed',
  )
  timm.models.resnetv2._load_weights(small, str(CHECKPOINT))  # timm's own reader
  state = {k: v for k, v in small.state_dict().items()}
  imported = pretrained.timm_to_npz(state)
  assert sorted(imported) == sorted(arrays)
  for key in arrays:
    np.testing.assert_array_equal(imported[key], arrays[key], err_msg=key)
  exported = {k: torch.from_numpy(v) for k, v in pretrained.npz_to_timm(arrays).items()}
  small.load_state_dict(exported, strict=True)  # every name and shape fits


def test_download_path_uses_cache_and_explains_offline_failure(tmp_path, monkeypatch):
  spec = dict(
    models.KNOWN_MODELS['BiT-S-R50x1'], url=CHECKPOINT.as_uri(), filename='BiT-S-R50x1.npz'
  )
  monkeypatch.setitem(models.KNOWN_MODELS, 'BiT-S-R50x1', spec)
  model, params = pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path)
  assert (tmp_path / 'BiT-S-R50x1.npz').exists() and model.num_classes == 10

  def offline(*args, **kwargs):
    raise urllib.error.URLError('no network')

  monkeypatch.setattr(download.urllib.request, 'urlopen', offline)
  with pytest.raises(RuntimeError, match='put it at'):
    pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path / 'empty')
  assert not list((tmp_path / 'empty').glob('*'))  # nothing half-written left
  with pytest.raises(FileNotFoundError, match='BiT-M-R50x1'):
    pretrained.load_pretrained('BiT-X-R50x1')


def test_pickled_npz_is_refused(tmp_path):
  np.savez(tmp_path / 'evil.npz', x=np.array([object()], dtype=object))
  with pytest.raises(ValueError):
    pretrained.read_npz(tmp_path / 'evil.npz')
