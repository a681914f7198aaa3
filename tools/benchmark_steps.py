"""Speed of the real train and inference steps, measured in one process (`tools/benchmark.py
--model` is the command line): throughput, compile time, memory, achieved FLOP/s against a
matmul peak measured in the same run, and timm's same model on the same shapes and threads.

Every timing is the median over timed calls after warm-up, each call waited for
(`block_until_ready`; torch's CPU ops return when done), so a few slow calls on a shared machine
move the result little. Compile time is the wall time of `lower()` + `compile()`.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bit_jax import models
from bit_jax.models import ops as ops_lib
from bit_jax.recipe import optim
from bit_jax.training import steps

TIMM_NAMES = {
  'R50x1': 'resnetv2_50x1_bit',
  'R50x3': 'resnetv2_50x3_bit',
  'R101x1': 'resnetv2_101x1_bit',
  'R101x3': 'resnetv2_101x3_bit',
  'R152x2': 'resnetv2_152x2_bit',
  'R152x4': 'resnetv2_152x4_bit',
}


def cpu_seconds() -> float:
  """User + system CPU time of the whole process (every thread) so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_steps(call, steps_: int, warmup: int) -> dict:
  """Median wall time and median process CPU time of `call()` (which must wait for its own
  result) after `warmup` calls. CPU time per step hardly moves when other processes share the
  cores, so it compares two libraries fairly on a busy machine (run both on one core:
  `taskset -c 0`, where spinning worker threads cannot inflate it)."""
  for _ in range(warmup):
    call()
  wall, cpu = [], []
  for _ in range(steps_):
    start, start_cpu = time.perf_counter(), cpu_seconds()
    call()
    wall.append(time.perf_counter() - start)
    cpu.append(cpu_seconds() - start_cpu)
  return {'step_s': statistics.median(wall), 'cpu_s': statistics.median(cpu)}


def usable_cpus() -> int:
  """CPUs this process may run on (`taskset` narrows them); XLA sizes its thread pool so."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def peak_host_mib() -> float:
  """The process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / 2**20 if sys.platform == 'darwin' else rss / 2**10


def peak_device_mib():
  """Peak bytes in use on the first device, or 'n/a' where the backend keeps no statistics
  (the CPU backend returns None)."""
  stats = jax.devices()[0].memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return 'n/a'
  return stats['peak_bytes_in_use'] / 2**20


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {
    'cpu': cpu,
    'cpus': usable_cpus(),
    'backend': jax.default_backend(),
    'device': str(jax.devices()[0].device_kind),
    'jax': jax.__version__,
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call by XLA's cost analysis (a dict; a one-element list in older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def matmul_peak(dtype=jnp.float32, size: int = 2048, steps_: int = 10, warmup: int = 2) -> dict:
  """FLOP/s of one large `jnp.dot`: the roof that the steps' FLOP/s are compared with."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
  dot = jax.jit(jnp.dot)
  timing = time_steps(lambda: dot(a, b).block_until_ready(), steps_, warmup)
  return {
    'size': size,
    'dtype': jnp.dtype(dtype).name,
    **timing,
    'flops_per_s': 2 * size**3 / timing['step_s'],
  }


def _compile(jitted, *args):
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def _result(batch_size, timing, compile_s=None, flops=None) -> dict:
  seconds = timing['step_s']
  return {
    'batch_size': batch_size,
    **timing,
    'images_per_s': batch_size / seconds,
    'images_per_cpu_s': batch_size / timing['cpu_s'] if timing['cpu_s'] else None,
    'compile_s': compile_s,
    'flops_per_step': flops,
    'flops_per_s': flops / seconds if flops else None,
    'peak_host_mib': peak_host_mib(),
    'peak_device_mib': peak_device_mib(),
  }


def fake_batch(num_classes: int, batch_size: int, resolution: int) -> dict:
  """Images uniform in [-1, 1] (NHWC float32) and int labels; the same for every caller."""
  rng = np.random.default_rng(0)
  return {
    'image': rng.uniform(-1, 1, (batch_size, resolution, resolution, 3)).astype(np.float32),
    'label': rng.integers(0, num_classes, batch_size).astype(np.int32),
  }


def init_params(model, resolution: int):
  return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, resolution, resolution, 3)))[
    'params'
  ]


def bit_train(
  model, params, batch_size: int, resolution: int, steps_: int = 10, warmup: int = 2
) -> dict:
  """The train step as `bit_jax.train` jits it on one device: `steps.make_train_step` with
  momentum SGD, the state donated, on a fixed random batch."""
  params = jax.tree.map(jnp.copy, params)  # the step donates (deletes) what it is given
  optimizer = optim.make_optimizer(params, momentum=0.9)
  state = {'params': params, 'opt_state': optimizer.init(params), 'step': jnp.zeros((), jnp.int32)}
  batch = jax.device_put(fake_batch(model.num_classes, batch_size, resolution))
  lr, rng = jnp.float32(1e-3), jax.random.PRNGKey(0)
  jitted = jax.jit(steps.make_train_step(model, optimizer), donate_argnums=0)
  compiled, compile_s = _compile(jitted, state, batch, lr, rng)

  def call():
    nonlocal state
    state, metrics = compiled(state, batch, lr, rng)
    jax.block_until_ready((state, metrics))

  return _result(batch_size, time_steps(call, steps_, warmup), compile_s, compiled_flops(compiled))


def bit_inference(
  model, params, batch_size: int, resolution: int, steps_: int = 10, warmup: int = 2
) -> dict:
  """Jitted `model.apply` (logits) on a fixed random batch."""
  images = jax.device_put(fake_batch(model.num_classes, batch_size, resolution)['image'])
  jitted = jax.jit(lambda p, x: model.apply({'params': p}, x))
  compiled, compile_s = _compile(jitted, params, images)
  timing = time_steps(lambda: compiled(params, images).block_until_ready(), steps_, warmup)
  return _result(batch_size, timing, compile_s, compiled_flops(compiled))


def timm_train_and_inference(
  timm_name: str,
  num_classes: int,
  train_batch: int,
  inference_batch: int,
  resolution: int,
  dtype=jnp.float32,
  steps_: int = 10,
  warmup: int = 2,
) -> dict:
  """timm's model on the same shapes and inputs, on the CPU with one torch thread per usable
  CPU (XLA uses them all): a momentum-SGD step on the cross-entropy, and eval-mode inference under
  `torch.no_grad`. bfloat16 runs under `torch.autocast`, float32 parameters as in bit_jax."""
  from timm_oracle import import_timm

  timm = import_timm()
  import torch

  torch.set_num_threads(usable_cpus())
  torch.manual_seed(0)
  model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
  autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == jnp.bfloat16)

  def batch(size):
    data = fake_batch(num_classes, size, resolution)
    return (
      torch.from_numpy(data['image']).permute(0, 3, 1, 2).contiguous(),  # timm is NCHW
      torch.from_numpy(data['label']).long(),
    )

  images, labels = batch(train_batch)
  model.train()

  def train_call():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
    loss.backward()
    optimizer.step()

  train = _result(train_batch, time_steps(train_call, steps_, warmup))
  images, _ = batch(inference_batch)
  model.eval()

  def inference_call():
    with torch.no_grad(), autocast:
      model(images)

  inference = _result(inference_batch, time_steps(inference_call, steps_, warmup))
  return {
    'model': timm_name,
    'train': train,
    'inference': inference,
    'threads': torch.get_num_threads(),
    'torch': torch.__version__,
    'timm': timm.__version__,
  }


def _resolved_ops(ops: str) -> list[str]:
  """The ops.py implementations to time: 'both', or one choice ('auto' as it resolves here)."""
  if ops == 'both':
    return ['custom', 'plain']
  return [
    ops
    if ops != 'auto'
    else next(k for k, v in ops_lib.IMPLEMENTATIONS.items() if v is ops_lib.implementation())
  ]


def run(
  name: str = 'R50x1',
  resolution: int = 128,
  train_batch: int = 8,
  inference_batch: int = 32,
  dtype: str = 'float32',
  num_classes: int = 1000,
  steps_: int = 10,
  warmup: int = 2,
  timm: bool = True,
  pipeline=None,
  ops: str = 'auto',
) -> dict:
  """All measurements of one run, as a JSON-able dict. `pipeline(crop, batch_size)` measures
  the input pipeline (a dict with 'images_per_s' and 'setup'; FileNotFoundError or ValueError
  when it cannot run); None skips it. timm runs on the CPU backend, when it is installed.
  `ops`: the model's implementation ('custom', 'plain', 'auto' or 'both'; see ops.py); with
  'both' the steps are timed with each, 'bit_jax' holding the first and 'bit_jax_plain' the
  autodiff one."""
  jdtype = jnp.dtype(dtype).type
  implementations = _resolved_ops(ops)
  results = {
    'machine': machine(),
    'config': {
      'model': name,
      'resolution': resolution,
      'train_batch': train_batch,
      'inference_batch': inference_batch,
      'dtype': dtype,
      'num_classes': num_classes,
      'timed_steps': steps_,
      'warmup': warmup,
      'ops': implementations,
    },
  }
  results['matmul_peak'] = matmul_peak(jdtype)
  for implementation in implementations:
    model = models.Architecture.from_name(name).model(num_classes, jdtype, ops=implementation)
    params = init_params(model, resolution)
    key = 'bit_jax' if implementation == implementations[0] else f'bit_jax_{implementation}'
    results[key] = {
      'train': bit_train(model, params, train_batch, resolution, steps_, warmup),
      'inference': bit_inference(model, params, inference_batch, resolution, steps_, warmup),
    }
    for step in results[key].values():
      if step['flops_per_s']:
        step['share_of_matmul_peak'] = step['flops_per_s'] / results['matmul_peak']['flops_per_s']
  results['timm'] = _timm_or_reason(
    timm, name, num_classes, train_batch, inference_batch, resolution, jdtype, steps_, warmup
  )
  if pipeline is not None:
    try:
      results['pipeline'] = pipeline(resolution, train_batch)
    except (FileNotFoundError, ValueError) as e:  # no prepared data set: report, go on
      results['pipeline'] = {'skipped': str(e).splitlines()[0]}
  results['ratios'] = ratios(results)
  return results


def _timm_or_reason(wanted, name, *args):
  if not wanted:
    return {'skipped': 'not asked for (--no_timm)'}
  if jax.default_backend() != 'cpu':
    return {'skipped': f'timm runs on the CPU; JAX runs on {jax.default_backend()}'}
  if name not in TIMM_NAMES:
    return {'skipped': f'no timm model for {name}; timm has {", ".join(TIMM_NAMES)}'}
  try:
    return timm_train_and_inference(TIMM_NAMES[name], *args)
  except ImportError as e:
    return {'skipped': str(e)}


def ratios(results: dict) -> dict:
  out = {}
  bit, timm = results['bit_jax'], results.get('timm', {})
  for step in ('train', 'inference'):
    if step in timm:
      out[f'{step}_bit_jax_over_timm'] = bit[step]['images_per_s'] / timm[step]['images_per_s']
      out[f'{step}_bit_jax_over_timm_per_cpu_s'] = (
        bit[step]['images_per_cpu_s'] / timm[step]['images_per_cpu_s']
      )
  pipeline = results.get('pipeline', {})
  if 'images_per_s' in pipeline:
    out['pipeline_over_train_step'] = pipeline['images_per_s'] / bit['train']['images_per_s']
  return out


COLUMNS = (  # header, key in a row, scale, format
  ('batch', 'batch_size', 1, 'd'),
  ('images/s', 'images_per_s', 1, '.1f'),
  ('bit_jax/timm', 'ratio', 1, '.2f'),
  ('images/CPU-s', 'images_per_cpu_s', 1, '.1f'),
  ('bit_jax/timm by CPU-s', 'cpu_ratio', 1, '.2f'),
  ('compile s', 'compile_s', 1, '.1f'),
  ('GFLOP/step', 'flops_per_step', 1e-9, '.1f'),
  ('GFLOP/s', 'flops_per_s', 1e-9, '.0f'),
  ('of matmul peak', 'share_of_matmul_peak', 1, '.0%'),
  ('peak host MiB', 'peak_host_mib', 1, '.0f'),
  ('peak device MiB', 'peak_device_mib', 1, '.0f'),
)


def markdown(results: dict) -> str:
  """The run as notes and a markdown table, one row per measurement."""
  config, machine_ = results['config'], results['machine']
  bit, timm, peak = results['bit_jax'], results.get('timm', {}), results['matmul_peak']
  first_ops = config.get('ops', ['auto'])[0]
  rows = [
    (
      f'bit_jax {step} ({first_ops})',
      {
        **bit[step],
        'ratio': results['ratios'].get(f'{step}_bit_jax_over_timm'),
        'cpu_ratio': results['ratios'].get(f'{step}_bit_jax_over_timm_per_cpu_s'),
      },
    )
    for step in ('train', 'inference')
  ]
  rows += [
    (f'bit_jax {step} ({key.removeprefix("bit_jax_")})', results[key][step])
    for key in results
    if key.startswith('bit_jax_')
    for step in ('train', 'inference')
  ]
  rows += [(f'timm {step}', timm[step]) for step in ('train', 'inference') if step in timm]
  pipeline = results.get('pipeline', {})
  if 'images_per_s' in pipeline:
    rows.append((f'input pipeline, {pipeline["setup"]}', pipeline))
  rows.append((f'{peak["dtype"]} matmul {peak["size"]}^3', peak))

  def cell(value, scale, fmt):
    return format(value * scale, fmt) if isinstance(value, (int, float)) else str(value or '')

  table = [
    '| measurement | ' + ' | '.join(c[0] for c in COLUMNS) + ' |',
    '|---' * (len(COLUMNS) + 1) + '|',
  ]
  table += [
    '| '
    + ' | '.join([label] + [cell(r.get(key), scale, fmt) for _, key, scale, fmt in COLUMNS])
    + ' |'
    for label, r in rows
  ]
  notes = [
    f'{config["model"]} {config["dtype"]} at {config["resolution"]} px on '
    f'{machine_["cpu"]} ({machine_["cpus"]} CPUs, JAX on {machine_["backend"]}); '
    f'medians over {config["timed_steps"]} timed steps after {config["warmup"]} warm-up.'
  ]
  if 'threads' in timm:
    notes.append(
      f'timm {timm["timm"]} `{timm["model"]}` on torch {timm["torch"]} with '
      f'{timm["threads"]} threads.'
    )
  for key in ('timm', 'pipeline'):
    if 'skipped' in results.get(key, {}):
      notes.append(f'{key}: skipped ({results[key]["skipped"]}).')
  if 'pipeline_over_train_step' in results['ratios']:
    notes.append(
      f'The input pipeline alone delivers '
      f'{results["ratios"]["pipeline_over_train_step"]:.0f}x what the train step '
      f'consumes.'
    )
  return '\n'.join(notes + [''] + table)
