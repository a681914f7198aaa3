"""Hugging Face hub and `.safetensors` checkpoints, offline.

Oracle: the logits of the same weights loaded from the official `.npz` (which
test_pretrained.py checks against timm). The hub file is that `.npz` rewritten by
`npz_to_timm`, whose names and layout timm's own `load_state_dict(strict=True)` accepts
(test_pretrained.py), and saved with safetensors, as timm publishes its BiT weights.
"""

import importlib.util
import socket

import huggingface_hub.constants  # reads HF_* now, before the tests set them
import jax
import numpy as np
import pytest
from conftest import REPO, TEST_DATA
from safetensors.numpy import save_file

from bit_jax.models import pretrained

CHECKPOINT = TEST_DATA / 'bit_small_official.npz'
GOLDEN = TEST_DATA / 'golden_bit_small.npz'
REPO_ID = 'timm/resnetv2_tiny_bit_test'
COMMIT = '0123456789abcdef0123456789abcdef01234567'


def save_timm_safetensors(path):
  timm = pretrained.npz_to_timm(pretrained.read_npz(CHECKPOINT))
  # Contiguous copies: safetensors writes a transposed (strided) array's bytes scrambled.
  save_file({k: np.ascontiguousarray(v) for k, v in timm.items()}, str(path))
  return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  """An offline Hugging Face cache holding REPO_ID at COMMIT, as `hf_hub_download` leaves it;
  any attempt to reach the network fails the test."""
  repo = tmp_path / 'hf' / ('models--' + REPO_ID.replace('/', '--'))
  (repo / 'snapshots' / COMMIT).mkdir(parents=True)
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text(COMMIT)
  save_timm_safetensors(repo / 'snapshots' / COMMIT / 'model.safetensors')
  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  lookups = []

  def no_network(host, *args, **kwargs):
    lookups.append(host)
    raise socket.gaierror(f'test is offline: looked up {host}')

  monkeypatch.setattr(socket, 'getaddrinfo', no_network)
  offline_at_import = huggingface_hub.constants.HF_HUB_OFFLINE
  yield repo
  assert lookups == []  # offline mode means not even trying
  assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_at_import  # nothing leaks


def logits(name_or_path):
  model, params = pretrained.load_pretrained(name_or_path)
  return np.asarray(jax.jit(model.apply)({'params': params}, np.load(GOLDEN)['images']))


def test_hub_and_safetensors_give_the_npz_logits(hub_cache):
  expected = logits(CHECKPOINT)
  assert np.abs(expected - np.load(GOLDEN)['logits']).max() <= 1e-4  # timm agrees
  assert np.abs(logits('hf-hub:' + REPO_ID) - expected).max() <= 1e-6
  local = hub_cache / 'snapshots' / COMMIT / 'model.safetensors'
  assert pretrained.detect_format(local) == 'safetensors'
  assert np.abs(logits(local) - expected).max() <= 1e-6
  architecture, head = pretrained.describe('hf-hub:' + REPO_ID)
  assert (architecture.units, architecture.width, head) == ((1, 1, 1, 1), 0.5, 10)


def test_repo_missing_offline_says_what_to_do(hub_cache):
  with pytest.raises(FileNotFoundError) as error:
    pretrained.load_pretrained('hf-hub:timm/resnetv2_50x1_bit.goog_in21k')
  message = str(error.value)
  assert 'timm/resnetv2_50x1_bit.goog_in21k' in message and 'HF_HUB_OFFLINE' in message
  assert str(hub_cache.parent) in message and 'pass its path to load_pretrained' in message


def test_unreadable_safetensors_is_a_clear_error(tmp_path):
  (tmp_path / 'broken.safetensors').write_bytes(b'not a safetensors file')
  with pytest.raises(ValueError, match='Cannot read .*broken.safetensors as safetensors'):
    pretrained.load_pretrained(tmp_path / 'broken.safetensors')


def test_convert_checkpoint_writes_safetensors_bit_exact(tmp_path):
  spec = importlib.util.spec_from_file_location('convert', REPO / 'tools' / 'convert_checkpoint.py')
  convert = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(convert)
  convert.write_any(pretrained.read_any(CHECKPOINT), tmp_path / 'model.safetensors')
  back = pretrained.read_any(tmp_path / 'model.safetensors')
  original = pretrained.read_npz(CHECKPOINT)
  assert sorted(back) == sorted(original)
  for key, value in original.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_a_hub_repos_config_gives_the_class_names_and_crop(hub_cache):
  # As a pushed bit_jax timm folder holds it (timm_folder.config): label names, input size.
  names = [f'class{i}' for i in range(10)]
  config = {'label_names': names, 'pretrained_cfg': {'input_size': [3, 64, 64]}}
  (hub_cache / 'snapshots' / COMMIT / 'config.json').write_text(__import__('json').dumps(config))
  _, _, info = pretrained.load_pretrained('hf-hub:' + REPO_ID, with_info=True)
  assert info == {'class_names': names, 'image_size': 64}


def test_a_hub_repo_without_config_gives_no_class_names(hub_cache):
  _, _, info = pretrained.load_pretrained('hf-hub:' + REPO_ID, with_info=True)
  assert info == {'class_names': None, 'image_size': None}
