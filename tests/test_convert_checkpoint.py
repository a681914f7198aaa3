"""tools/convert_checkpoint.py: bit-exact round trips, timm strict loading and logits, the CLI."""

import importlib.util
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, TEST_DATA

from bit_jax.models import pretrained

CHECKPOINT = TEST_DATA / 'bit_small_official.npz'
GOLDEN = TEST_DATA / 'golden_bit_small.npz'
TOOL = REPO / 'tools' / 'convert_checkpoint.py'

_spec = importlib.util.spec_from_file_location('convert_checkpoint', TOOL)
convert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert)


def official_arrays():
  with np.load(CHECKPOINT) as f:
    return {k: f[k] for k in f.files}


def assert_bit_exact(original, back):
  assert sorted(original) == sorted(back)
  for key in original:
    assert original[key].dtype == back[key].dtype, key
    assert original[key].shape == back[key].shape, key
    np.testing.assert_array_equal(original[key], back[key], err_msg=key)


@pytest.mark.parametrize('middle', ['model.pth', 'model.pt', 'orbax_ckpt'])
def test_round_trip_through_each_format_is_bit_exact(tmp_path, middle):
  if middle.endswith(('.pth', '.pt')):
    pytest.importorskip('torch')
  arrays = pretrained.read_any(CHECKPOINT)
  convert.write_any(arrays, tmp_path / middle)
  convert.write_any(pretrained.read_any(tmp_path / middle), tmp_path / 'back.npz')
  assert_bit_exact(official_arrays(), pretrained.read_npz(tmp_path / 'back.npz'))


def test_orbax_dir_holds_flax_params_and_architecture(tmp_path):
  import orbax.checkpoint as ocp

  arch = convert.write_any(pretrained.read_any(CHECKPOINT), tmp_path / 'ckpt')
  expected, num_classes = pretrained.architecture_of(official_arrays())
  assert arch == dict(
    name=expected.name, units=list(expected.units), width=expected.width, num_classes=num_classes
  )
  assert (arch['name'], arch['units'], arch['width'], arch['num_classes']) == (
    'R14x0.5',
    [1, 1, 1, 1],
    0.5,
    10,
  )
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(tmp_path / 'ckpt')
    stored = checkpointer.metadata(tmp_path / 'ckpt').custom_metadata['bit_architecture']
  assert stored == arch
  model, _ = pretrained.load_pretrained(CHECKPOINT)
  golden = np.load(GOLDEN)
  logits = jax.jit(model.apply)(variables, golden['images'])
  np.testing.assert_allclose(logits, golden['logits'], atol=1e-4)


def test_pth_loads_into_timm_strictly_with_the_same_logits(tmp_path):
  timm = pytest.importorskip('timm_oracle').import_timm()
  import torch

  convert.write_any(pretrained.read_any(CHECKPOINT), tmp_path / 'small.pth')
  small = timm.models.resnetv2.ResNetV2(
    layers=[1, 1, 1, 1],
    channels=(128, 256, 512, 1024),
    num_classes=10,
    stem_chs=32,
    stem_type='fixed',
  )
  small.load_state_dict(
    torch.load(tmp_path / 'small.pth', map_location='cpu', weights_only=True), strict=True
  )
  golden = np.load(GOLDEN)
  with torch.no_grad():
    timm_logits = small.eval()(torch.from_numpy(golden['images']).permute(0, 3, 1, 2)).numpy()
  model, params = pretrained.load_pretrained(CHECKPOINT)
  jax_logits = np.asarray(jax.jit(model.apply)({'params': params}, golden['images']))
  np.testing.assert_allclose(timm_logits, jax_logits, atol=1e-4)
  np.testing.assert_allclose(timm_logits, golden['logits'], atol=1e-4)


def run_cli(*args):
  return subprocess.run(
    [sys.executable, str(TOOL), *map(str, args)],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=120,
  )


def test_cli_converts_with_forced_format_and_refuses_to_overwrite(tmp_path):
  dst = tmp_path / 'weights.bin'  # no telling suffix: --to says npz
  done = run_cli(CHECKPOINT, dst, '--to', 'npz')
  assert done.returncode == 0, done.stderr
  arrays = official_arrays()
  summary = (
    f'(npz): {len(arrays)} arrays, {sum(v.size for v in arrays.values()):,} '
    f'parameters, {convert.describe(convert.architecture(arrays))}'
  )
  assert summary in done.stdout
  assert '10 classes' in done.stdout
  assert_bit_exact(official_arrays(), pretrained.read_npz(dst))

  dst.write_bytes(b'keep me')
  refused = run_cli(CHECKPOINT, dst, '--to', 'npz')
  assert refused.returncode != 0 and '--overwrite' in refused.stderr
  assert dst.read_bytes() == b'keep me'
  with pytest.raises(FileExistsError, match='--overwrite'):
    convert.write_any(official_arrays(), dst, 'npz')
  convert.write_any(official_arrays(), dst, 'npz', overwrite=True)
  assert_bit_exact(official_arrays(), pretrained.read_npz(dst))


def test_not_a_bit_checkpoint_or_unreadable_file_is_explained(tmp_path, monkeypatch):
  np.savez(tmp_path / 'other.npz', **{'conv1/kernel': np.zeros((3, 3, 3, 8), np.float32)})
  with pytest.raises(pretrained.CheckpointMismatchError, match='Not an official BiT'):
    pretrained.read_any(tmp_path / 'other.npz')
  arrays = official_arrays()
  del arrays['resnet/block2/unit01/b/group_norm/beta']
  with pytest.raises(pretrained.CheckpointMismatchError, match='group_norm/beta'):
    convert.write_any(arrays, tmp_path / 'broken.npz')
  assert not (tmp_path / 'broken.npz').exists()
  (tmp_path / 'garbage.npz').write_bytes(b'not a zip archive')
  with pytest.raises(ValueError, match='Cannot read .*--from'):
    pretrained.read_any(tmp_path / 'garbage.npz')
  with pytest.raises(ValueError, match='Cannot read .*orbax'):
    pretrained.read_any(tmp_path, 'orbax')
  with pytest.raises(FileNotFoundError):
    pretrained.read_any(tmp_path / 'missing.pth')
  monkeypatch.setitem(sys.modules, 'torch', None)  # as if torch were not installed
  with pytest.raises(ImportError, match='pip install torch==2.13.0'):
    convert.write_any(official_arrays(), tmp_path / 'model.pth')


@pytest.mark.parametrize('target', ['converted.pth', 'converted_orbax'])
def test_load_pretrained_reads_converted_checkpoints(tmp_path, target):
  if target.endswith('.pth'):
    pytest.importorskip('torch')
  convert.write_any(pretrained.read_npz(CHECKPOINT), tmp_path / target)
  golden = np.load(TEST_DATA / 'golden_bit_small.npz')
  model, params = pretrained.load_pretrained(tmp_path / target)
  np.testing.assert_allclose(
    jax.jit(model.apply)({'params': params}, golden['images']), golden['logits'], atol=1e-4
  )
