"""Weights out: every phase's weights kept, timm folders (local and pushed to the hub), ONNX.

Oracles: bit_jax's own logits of the same weights, computed by timm (`create_model` from the
exported folder, timm's own loader and network) and by onnxruntime, to 1e-4 of the logit scale
(the largest |logit|: float32 networks that sum in different orders); the run's own final
evaluation of each phase (predict on the phase's weights prints the same top-1); the
huggingface_hub calls, recorded offline.
"""

import json
import socket

import in_process
import jax
import numpy as np
import pytest
from test_predict import CLASSES, write_digits_folder
from test_train import tiny_config

from bit_jax import export, models
from bit_jax.models import hub, pretrained
from bit_jax.runtime.errors import ConfigError, RunError
from bit_jax.serving import fine_tuned, timm_folder
from bit_jax.training import run

PHASES = (
  {'name': 'first', 'total_steps': 6},
  {'name': 'second', 'init': 'previous', 'total_steps': 4, 'lr': 0.01},
)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A two-phase tiny run on an image folder of real digits: (workdir, folder, results)."""
  root = tmp_path_factory.mktemp('digits')
  write_digits_folder(root)
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config(
    dataset=f'folder:{root}',
    classes=None,
    eval_every=0,
    checkpoint_every=4,
    total_steps=None,  # every phase sets its own (a top-level value would reach none: refused)
    phases=PHASES,
  )
  return workdir, root, run.run(config, workdir)


def cli(module, *flags):
  """`python -m <module> *flags`, run in this process (tests/in_process.py)."""
  return in_process.run(module.removeprefix('bit_jax.'), *flags)


def bit_jax_logits(spec, images):
  model, params = pretrained.load_pretrained(spec)
  return np.asarray(jax.jit(lambda x: model.apply({'params': params}, x))(images))


def timm_logits(folder, images):
  from timm_oracle import import_timm

  timm = import_timm()
  import torch

  model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
  with torch.no_grad():
    return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy(), model


def close(got, expected):
  return np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def images(n, size=16, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_every_phase_keeps_its_weights_and_checkpoints_are_named_by_step(trained):
  workdir, root, results = trained
  first, second = (pretrained.read_any(workdir / f'{p["name"]}.npz') for p in PHASES)
  final = pretrained.read_any(workdir / 'final.npz')
  assert all(np.array_equal(second[k], final[k]) for k in final)
  assert not all(np.array_equal(first[k], second[k]) for k in final)  # phase 2 trained on
  for name in ('first', 'second'):
    assert pretrained.read_metadata(workdir / f'{name}.npz') == {
      'class_names': sorted(CLASSES),
      'image_size': 16,
    }
  # Saves every 4 steps and at each phase's end, named by global step: 4, 6 (first ends),
  # 10 (second ends; its step 4 is its last, saved once by the phase's end).
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == [
    4,
    6,
    10,
  ]
  assert fine_tuned.locate(f'{workdir}:first') == (
    str(workdir / 'first.npz'),
    fine_tuned.Workdir(workdir),
    'first',
  )
  with pytest.raises(ConfigError, match=r"no weights of phase 'third' \(its phases: first, second"):
    fine_tuned.load_model(f'{workdir}:third')
  (workdir / 'final.npz').rename(workdir / 'final.kept')  # as if the run had not finished
  try:
    with pytest.raises(ConfigError, match=rf'not finished: no final.npz.*--model={workdir}:second'):
      fine_tuned.load_model(str(workdir))
  finally:
    (workdir / 'final.kept').rename(workdir / 'final.npz')
  # The first phase's weights, as predict reads them, score what the run measured for them.
  done = cli(
    'bit_jax.predict',
    f'--model={workdir}:first',
    f'--images={root / "test"}',
    f'--out={workdir / "first_predictions.csv"}',
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'top-1 {results["phases"][0]["test_top1"]:.4f}' in done.stdout, (done.stdout, results)


@pytest.mark.slow  # ~40-60 s on 2 busy cores: timm and torch on top of the run
def test_timm_folder_gives_bit_jax_logits_in_timm_and_reads_back(trained, tmp_path):
  workdir, _, results = trained
  out = tmp_path / 'timm'
  done = cli('bit_jax.export', f'--model={workdir}:first', '--format=timm', f'--out={out}')
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"timm.create_model('local-dir:{out}', pretrained=True)" in done.stdout
  x = images(4)
  expected = bit_jax_logits(workdir / 'first.npz', x)
  got, model = timm_logits(out, x)
  assert close(got, expected), np.abs(got - expected).max()
  cfg = json.loads((out / 'config.json').read_text())
  assert cfg['label_names'] == sorted(CLASSES) == model.pretrained_cfg['label_names']
  assert cfg['architecture'] == 'resnetv2_50'  # R14x0.5: timm's generic ResNetV2 builder
  data = model.pretrained_cfg
  assert (data['input_size'], data['mean'], data['std']) == ([3, 16, 16], [0.5] * 3, [0.5] * 3)
  assert (data['interpolation'], data['crop_pct'], data['crop_mode']) == ('bilinear', 1.0, 'squash')
  # bit_jax reads the folder back: same function, names and crop.
  back, params, info = pretrained.load_pretrained(out, with_info=True)
  assert info == {'class_names': sorted(CLASSES), 'image_size': 16}
  assert close(np.asarray(back.apply({'params': params}, x)), expected)
  card = (out / 'README.md').read_text()
  first = results['phases'][0]
  assert f'top1 {first["test_top1"]:.4f}' in card and f'on {first["test_examples"]} test' in card
  assert 'Steps: 6 of batch 16' in card and 'kolesnikov2020bit' in card
  assert 'Fine-tuned from: scratch' in card


def test_push_to_hub_uploads_the_folder_timm_loads(trained, tmp_path, monkeypatch):
  from huggingface_hub import HfApi, RepoUrl

  def offline(host, *args, **kwargs):
    raise AssertionError(f'the test reached for the network: {host}')

  monkeypatch.setattr(socket, 'getaddrinfo', offline)
  calls, uploaded = [], {}

  def create_repo(self, repo_id, **kwargs):
    calls.append(('create_repo', repo_id, kwargs))
    return RepoUrl(f'https://huggingface.co/{repo_id}')

  def upload_folder(self, **kwargs):
    calls.append(('upload_folder', kwargs['repo_id'], kwargs['folder_path']))
    folder = tmp_path / 'hub'  # what the hub now holds: a copy of the files sent
    for path in sorted(__import__('pathlib').Path(kwargs['folder_path']).iterdir()):
      uploaded[path.name] = path.read_bytes()
      folder.mkdir(exist_ok=True)
      (folder / path.name).write_bytes(uploaded[path.name])

  monkeypatch.setattr(HfApi, 'create_repo', create_repo)
  monkeypatch.setattr(HfApi, 'upload_folder', upload_folder)
  workdir, _, _ = trained
  out = tmp_path / 'timm'
  lines = export.run_export(f'{workdir}', 'timm', out, push_to_hub='me/my-bit')
  assert calls == [
    ('create_repo', 'me/my-bit', {'private': False, 'exist_ok': True}),
    ('upload_folder', 'me/my-bit', str(out)),
  ]
  assert lines[-1] == f'Pushed {out} to https://huggingface.co/me/my-bit'
  assert sorted(uploaded) == ['README.md', 'config.json', 'model.safetensors']
  assert all((out / name).read_bytes() == content for name, content in uploaded.items())
  assert "timm.create_model('hf-hub:me/my-bit', pretrained=True)" in uploaded['README.md'].decode()
  x = images(2, seed=1)
  got, _ = timm_logits(tmp_path / 'hub', x)  # the pushed files, as timm loads them
  assert close(got, bit_jax_logits(workdir / 'final.npz', x))
  with pytest.raises(ConfigError, match='--format=timm'):
    export.run_export(f'{workdir}', 'onnx', tmp_path / 'm.onnx', push_to_hub='me/my-bit')


def random_official(architecture, num_classes, seed=0):
  """Official-layout arrays of `architecture` with values away from init (kernels with a
  non-zero mean, so Weight Standardization matters; GroupNorm away from 1/0; a live head)."""
  rng = np.random.default_rng(seed)
  shapes = models.param_shapes(architecture.model(num_classes))
  params = jax.tree.map(lambda s: rng.normal(0.1, 1.0, s.shape).astype(np.float32), shapes)
  arrays = pretrained.params_to_npz(params)
  for key in arrays:
    if 'group_norm' in key:
      arrays[key] = rng.uniform(0.5, 1.5, arrays[key].shape).astype(np.float32)
    if 'head' in key:
      arrays[key] = arrays[key] * np.float32(0.05)
  return arrays


@pytest.mark.slow  # ~40-60 s on 2 busy cores: timm and torch on top of the run
def test_a_published_bit_size_is_timms_own_bit_model(tmp_path):
  arrays = random_official(models.Architecture.from_name('R50x1'), 5)
  names = ('a', 'b', 'c', 'd', 'e')
  timm_folder.write(tmp_path / 'timm', arrays, class_names=names, crop=32)
  cfg = json.loads((tmp_path / 'timm' / 'config.json').read_text())
  assert cfg['architecture'] == 'resnetv2_50x1_bit' and 'model_args' not in cfg
  np.savez(tmp_path / 'official.npz', **arrays)
  x = images(2, size=32)
  expected = bit_jax_logits(tmp_path / 'official.npz', x)
  got, model = timm_logits(tmp_path / 'timm', x)
  assert close(got, expected), np.abs(got - expected).max()
  assert model.pretrained_cfg['label_names'] == list(names)
  back = pretrained.read_any(tmp_path / 'timm')  # raw kernels kept: bit-exact round trip
  assert all(np.array_equal(back[k], v.reshape(back[k].shape)) for k, v in arrays.items())


def test_onnx_gives_bit_jax_logits_for_any_batch_and_image_size(trained, tmp_path):
  import onnxruntime
  import tensorflow as tf

  workdir, _, _ = trained
  out = tmp_path / 'model.onnx'
  done = cli('bit_jax.export', f'--model={workdir}', '--format=onnx', f'--out={out}')
  assert done.returncode == 0, done.stderr[-3000:]
  session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
  meta = session.get_modelmeta().custom_metadata_map
  assert json.loads(meta['class_names']) == sorted(CLASSES) and meta['crop'] == '16'
  model, params = pretrained.load_pretrained(workdir / 'final.npz')
  apply = jax.jit(lambda x: model.apply({'params': params}, x))
  rng = np.random.default_rng(0)
  for batch, size in ((1, (16, 16)), (3, (16, 16)), (8, (16, 16)), (2, (41, 29))):
    uint8 = rng.integers(0, 256, (batch, *size, 3), np.uint8)
    expected = np.asarray(apply(export.preprocess(tf.constant(uint8), 16).numpy()))
    logits, probabilities = session.run(None, {'images': uint8})
    assert logits.shape == (batch, 3) and close(logits, expected), (batch, size)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
  empty = session.run(None, {'images': np.zeros((0, 16, 16, 3), np.uint8)})
  assert [a.shape for a in empty] == [(0, 3), (0, 3)]


def test_a_failed_push_says_what_to_do_and_keeps_the_folder(tmp_path, monkeypatch):
  import types

  from huggingface_hub import HfApi, errors

  def refused(self, repo_id, **kwargs):
    response = types.SimpleNamespace(status_code=401, headers={}, request=None)
    raise errors.HfHubHTTPError('401 Client Error: Unauthorized', response=response)

  monkeypatch.setattr(HfApi, 'create_repo', refused)
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(RunError, match=r'Could not push .* me/my-bit .*hf auth login.*kept'):
    hub.push(tmp_path, 'me/my-bit')
  assert (tmp_path / 'config.json').exists()
