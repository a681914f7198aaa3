"""tools/benchmark.py --model on a tiny model: every measurement is there and the table renders.
Oracle: XLA's own FLOP count, and a hand count of what the run was asked to do. No speed is
asserted here: the speed targets live in the benchmark's output (docs/benchmarks.md)."""

import importlib.util
import itertools
import json

from conftest import REPO

_spec = importlib.util.spec_from_file_location('benchmark_tool', REPO / 'tools' / 'benchmark.py')
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def test_model_mode_measures_and_reports_everything(tmp_path, capsys):
  tool.main(
    [
      '--model',
      'R14x0.5',
      '--resolution',
      '32',
      '--train_batch',
      '2',
      '--inference_batch',
      '4',
      '--num_classes',
      '10',
      '--timed_steps',
      '2',
      '--warmup',
      '0',
      '--no_timm',
      '--data_dir',
      str(tmp_path / 'no_data'),
      '--out',
      str(tmp_path),
      '--ops',
      'both',
    ]
  )
  printed = capsys.readouterr().out
  run = json.loads((tmp_path / 'benchmarks.jsonl').read_text())
  assert run['config']['model'] == 'R14x0.5' and run['machine']['cpus'] >= 1
  assert run['config']['ops'] == ['custom', 'plain']
  for (step, batch), key in itertools.product(
    (('train', 2), ('inference', 4)), ('bit_jax', 'bit_jax_plain')
  ):
    result = run[key][step]
    assert result['batch_size'] == batch
    assert result['images_per_s'] == batch / result['step_s'] > 0
    assert result['compile_s'] > 0 and result['cpu_s'] > 0 and result['peak_host_mib'] > 0
    assert result['flops_per_step'] > 0 and 0 < result['share_of_matmul_peak']
  # A training step costs more than a forward pass on half the images.
  assert (
    run['bit_jax']['train']['flops_per_step'] > run['bit_jax']['inference']['flops_per_step'] / 2
  )
  assert run['timm'] == {'skipped': 'not asked for (--no_timm)'}
  assert 'skipped' in run['pipeline'] and run['ratios'] == {}
  table = [line for line in printed.splitlines() if line.startswith('| bit_jax ')]
  assert [line.split('|')[1].strip() for line in table] == [
    'bit_jax train (custom)',
    'bit_jax inference (custom)',
    'bit_jax train (plain)',
    'bit_jax inference (plain)',
  ]
  assert 'timm: skipped' in printed and 'pipeline: skipped' in printed
  assert (tmp_path / 'benchmarks.md').read_text().count('| bit_jax ') == 4
