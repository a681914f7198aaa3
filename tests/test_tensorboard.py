"""The demo's run as a person reads it: TensorBoard with one run per phase, its weights per phase.

Oracle: TensorBoard's own readers, `EventAccumulator` (scripts) and the plugin accumulator that
TensorBoard's data provider serves from, against metrics.jsonl and phases.json of the same run.
"""

import json

import numpy as np
import pytest
from conftest import REPO
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from test_train import load_config

from bit_jax.models import pretrained
from bit_jax.training import run


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
  """configs/demo.py at a few steps a phase: (workdir, results)."""
  config = load_config(REPO / 'configs' / 'demo.py', '')
  config.phases = tuple(dict(p, total_steps=4) for p in config.phases)
  config.log_every, config.checkpoint_every, config.crop, config.resize = 2, 0, 16, 18
  workdir = tmp_path_factory.mktemp('demo')
  return workdir, run.run(config, workdir)


def test_one_tensorboard_run_per_phase_with_scalars_and_the_plan(demo):
  workdir, _ = demo
  records = json.loads((workdir / 'phases.json').read_text())
  lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
  names = [r['name'] for r in records]
  assert names == ['upstream', 'transfer', 'scratch']
  assert sorted(p.name for p in (workdir / 'tensorboard').iterdir()) == sorted(names)
  for record in records:
    logdir = str(workdir / 'tensorboard' / record['name'])
    events = event_accumulator.EventAccumulator(logdir)
    events.Reload()
    expected = {x['step']: x['loss'] for x in lines if x['phase'] == record['name'] and 'loss' in x}
    loss = {e.step: e.value for e in events.Scalars('loss')}
    assert loss == pytest.approx(expected, rel=1e-6) and len(loss) == 2  # steps 2 and 4
    assert 'test_top1' in events.Tags()['scalars']
    assert 'test_examples' not in events.Tags()['scalars']  # a count, not a curve
    # The plan as text, and as hparams, for this phase.
    [plan] = events.Tensors('plan')
    text = plan.tensor_proto.string_val[0].decode()
    assert f'| total_steps | {record["total_steps"]} |' in text and f'"{record["init"]}"' in text
    assert '_hparams_/session_start_info' in events.PluginTagToContent('hparams')
    # TensorBoard's data provider reads the same scalars (migrated to tensors).
    served = plugin_event_accumulator.EventAccumulator(logdir)
    served.Reload()
    tensors = served.Tensors('loss')
    assert {t.step for t in tensors} == set(expected)
    assert served.SummaryMetadata('loss').plugin_data.plugin_name == 'scalars'


def test_every_phase_of_the_demo_keeps_its_weights(demo):
  workdir, results = demo
  for result in results['phases']:
    path = workdir / f'{result["phase"]}.npz'
    assert pretrained.read_metadata(path) == {
      'class_names': [str(i) for i in range(10)],
      'image_size': 16,
    }
  transfer = pretrained.read_any(workdir / 'transfer.npz')
  final = pretrained.read_any(workdir / 'final.npz')  # the scratch control's
  assert not all(np.array_equal(transfer[k], final[k]) for k in final)
