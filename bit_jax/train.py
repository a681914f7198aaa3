"""Train and evaluate: `python -m bit_jax.train --config=configs/bit_hyperrule.py --workdir=DIR`.

The config is a list of phases (see `phases.py`); each phase builds its data, model and
optimizer, and starts from the weights the previous phase ended with. One jitted step runs over
a `Mesh` with a 'data' axis: parameters and optimizer state replicated, batches sharded.

Resume is automatic: a workdir with checkpoints continues from the newest, replaying the same
data stream and rngs, so a run killed after step s finishes as if never interrupted. SIGTERM
(TPU preemption) saves a checkpoint and exits cleanly. Outputs in the workdir:
`metrics.jsonl`, `tensorboard/`, `phases.json` (every resolved value), `*_ids.json` (the exact
training examples of each phase), `checkpoints/`, `results.json` and `final.npz` (the final
weights in the official BiT layout: `bit_jax.load_pretrained(workdir + '/final.npz')`).

Several processes: on Cloud TPU VM pods `jax.distributed` initialises itself; elsewhere pass
--coordinator_address, --num_processes and --process_id.
"""

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

from bit_jax import (checkpoint, datasets, fewshot, hyperrule, input_pipeline, metrics, models,
                     optim, phases, pretrained, steps, subsets)

DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / 'configs' / 'demo.py')


class TrainingError(RuntimeError):
  """A problem the user must fix; `main` prints it without a traceback."""


@jax.jit
def all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _data_for(phase, workdir, writer):
  """Training ids (subset, minus a validation holdout), the sources and the image size."""
  try:
    source, test = (datasets.get_source(phase.dataset, split, data_dir=phase.data_dir,
                                        classes=phase.classes, label_key=phase.label_key)
                    for split in (phase.train_split, phase.eval_split))
  except Exception as e:   # TFDS/file errors: say which dataset and what to check
    raise TrainingError(f'Phase {phase.name}: cannot load dataset {phase.dataset!r} '
                        f'(splits {phase.train_split!r}/{phase.eval_split!r}, data_dir '
                        f'{phase.data_dir!r}): {e}') from e
  labels = source.labels()
  candidates, val_ids = None, None
  if phase.val_fraction:
    candidates, val_ids = subsets.holdout_split(labels, phase.subset_seed,
                                                val_fraction=phase.val_fraction)
  if phase.shots:
    ids = subsets.per_class(labels, phase.shots, phase.subset_seed, within=candidates)
  elif phase.fraction:
    ids = subsets.fraction(labels, phase.fraction, phase.subset_seed, within=candidates)
  else:
    ids = candidates if candidates is not None else np.arange(len(labels), dtype=np.int64)
  if writer.enabled:
    subsets.save_ids(Path(workdir) / f'{phase.name}_train_ids.json', ids, dataset=phase.dataset,
                     split=phase.train_split, shots=phase.shots, fraction=phase.fraction,
                     seed=phase.subset_seed, classes=phase.classes)
  image_hw = hyperrule.image_size(phase.dataset, phase.data_dir)
  if image_hw is None:   # unknown dataset: read the size from the data, as the HyperRule needs it
    image_hw = hyperrule.image_size_from_examples(
        r['image'] for r in source.records().take(256).as_numpy_iterator())
  return dict(source=source, ids=ids, val_ids=val_ids, test=test, image_hw=image_hw,
              num_classes=source.num_classes)


class Trainer:
  """The imperative shell around the pure steps: one instance per run."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, Path(workdir)
    self.mesh = Mesh(np.array(jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.batch_sharding = NamedSharding(self.mesh, PartitionSpec('data'))
    self.writer = metrics.MetricWriter(self.workdir, enabled=metrics.is_logging_process())
    self.checkpoints = checkpoint.Checkpoints(self.workdir, keep=config.keep_checkpoints)
    self.stop_requested = False
    self.shards = config.data_shards or jax.process_count()
    if self.shards % jax.process_count():
      raise TrainingError(f'data_shards={self.shards} must be a multiple of the '
                          f'{jax.process_count()} processes.')

  # --- building blocks -------------------------------------------------------------------

  def _global(self, local_batch, sharding=None):
    return {k: jax.make_array_from_process_local_data(sharding or self.batch_sharding, v)
            for k, v in local_batch.items() if k != 'id'}

  def _train_batches(self, phase, data, start_step):
    """This process's shards of the phase's stream, concatenated: the global batch is the
    same whatever the number of processes, given the same `data_shards`."""
    per_process = self.shards // jax.process_count()
    first = jax.process_index() * per_process
    streams = [input_pipeline.train_data(
        data['source'], global_batch_size=phase.batch_size, crop=phase.crop,
        resize=phase.resize, seed=phase.seed + phase.index, preprocess=phase.preprocess,
        ids=data['ids'], start_step=start_step, process_index=shard,
        process_count=self.shards, multi_hot=phase.loss == 'sigmoid')
        for shard in range(first, first + per_process)]
    for parts in zip(*streams):
      if len(parts) == 1:   # the usual case: no copy of what may be a gigabyte a step
        yield {k: parts[0][k] for k in ('image', 'label')}
      else:
        yield {k: np.concatenate([p[k] for p in parts]) for k in ('image', 'label')}

  def _model(self, arch, phase):
    return models.ResNetV2(depth=arch['depth'], width=arch['width'], units=arch['units'],
                           num_classes=phase.num_classes, dtype=jnp.dtype(phase.dtype))

  def _initial_params(self, phase, arch, previous, previous_phase):
    """(arch, params) for the start of `phase`: carried over, from scratch, or a checkpoint.

    Carried-over weights keep their head only for the same task (dataset, split, classes and
    head size); a new task gets a fresh zero head, as BiT fine-tuning does, even at equal size.
    """
    if phase.init == 'previous':
      if previous is None:
        raise TrainingError(f'Phase {phase.name} has init="previous" but is the first phase.')
      params = dict(previous)
      model = self._model(arch, phase)
      head = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, phase.crop, phase.crop, 3)))['params']['head']
      task = lambda p: (p.dataset, p.train_split, p.classes)
      same_task = (params['head']['kernel'].shape == head['kernel'].shape and
                   task(phase) == task(previous_phase))
      if not same_task:
        params['head'] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), head)
      return arch, params
    if phase.init == 'scratch':
      try:
        depth, width = models.parse_architecture(phase.model)
      except ValueError as e:
        raise TrainingError(f'Phase {phase.name}: {e}') from e
      arch = dict(depth=depth, width=width, units=None)
      model = self._model(arch, phase)
      return arch, jax.jit(model.init)(jax.random.PRNGKey(phase.seed),
                                       jnp.zeros((1, phase.crop, phase.crop, 3)))['params']
    try:
      model, params = pretrained.load_pretrained(phase.init, num_classes=phase.num_classes)
    except (FileNotFoundError, pretrained.CheckpointMismatchError, RuntimeError) as e:
      raise TrainingError(f'Phase {phase.name}: cannot load init={phase.init!r}: {e}') from e
    return dict(depth=model.depth, width=model.width, units=model.units), params

  def _state(self, params, optimizer):
    state = {'params': params, 'opt_state': optimizer.init(params),
             'step': jnp.zeros((), jnp.int32)}
    return jax.device_put(state, self.replicated)

  def _evaluate(self, eval_step, params, eval_data):
    totals = None
    for batch in eval_data:
      out = eval_step(params, self._global(batch))
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = max(float(totals['count']), 1.0)
    return {'top1': float(totals['top1']) / count, 'top5': float(totals['top5']) / count,
            'loss': float(totals['loss']) / count, 'count': int(totals['count'])}

  # --- the run ---------------------------------------------------------------------------

  def run(self):
    config = self.config
    signal.signal(signal.SIGTERM, lambda *_: setattr(self, 'stop_requested', True))
    progress = {'phase': 0, 'phase_step': 0, 'phase_done': False, 'global_step': 0,
                'examples_seen': 0, 'elapsed_s': 0.0, 'results': [], 'plateau': None,
                'arch': None}
    latest = self.checkpoints.latest_step()
    if latest is not None:
      progress = self.checkpoints.progress(latest)
      self.writer.print(f'Resuming from {self.workdir}/checkpoints step {latest} '
                        f'(phase {progress["phase"]}, step {progress["phase_step"]}).')
    start_time = time.perf_counter() - progress['elapsed_s']
    resolved, params, previous_phase = [], None, None
    for phase in phases.phase_configs(config):
      data = _data_for(phase, self.workdir, self.writer)
      phase = phases.fill_from_hyperrule(
          phase, num_examples=len(data['ids']), image_hw=data['image_hw'],
          num_classes=data['num_classes'])
      resolved.append(phase.to_dict())
      if self.writer.enabled:
        (self.workdir / 'phases.json').write_text(json.dumps(resolved, indent=1, default=str))
      if phase.index < progress['phase']:     # finished before the resume point
        previous_phase = phase
        continue
      params = self._run_phase(phase, data, progress, params, previous_phase, latest,
                               start_time)
      latest, previous_phase = None, phase
      progress.update(phase=phase.index + 1, phase_step=0, phase_done=False, plateau=None)
    results = {'final': progress['results'][-1], 'phases': progress['results'],
               'steps': progress['global_step'], 'examples_seen': progress['examples_seen'],
               'wall_time_s': time.perf_counter() - start_time}
    if self.writer.enabled:
      if params is not None:    # None when resuming a run that had already finished
        pretrained.save_npz(self.workdir / 'final.npz', jax.device_get(params))
      (self.workdir / 'results.json').write_text(json.dumps(results, indent=1))
    self.checkpoints.close()
    self.writer.close()
    return results

  def _run_phase(self, phase, data, progress, previous_params, previous_phase, resume_step,
                 start_time):
    w = self.writer
    if phase.batch_size % jax.device_count():
      raise TrainingError(f'batch_size={phase.batch_size} does not divide over '
                          f'{jax.device_count()} devices; use a multiple of {jax.device_count()}.')
    if phase.batch_size % (phase.batch_split * self.shards):
      raise TrainingError(f'batch_size={phase.batch_size} must be a multiple of batch_split '
                          f'({phase.batch_split}) and of data_shards ({self.shards}).')
    if resume_step is not None:
      arch = progress['arch']
      params = jax.eval_shape(lambda: self._model(arch, phase).init(
          jax.random.PRNGKey(0), jnp.zeros((1, phase.crop, phase.crop, 3)))['params'])
    else:
      arch, params = self._initial_params(phase, progress['arch'], previous_params,
                                          previous_phase)
      progress['arch'] = arch
    model = self._model(arch, phase)
    try:
      optimizer = optim.make_optimizer(params, momentum=phase.momentum,
                                       weight_decay=phase.weight_decay, freeze=phase.freeze)
    except ValueError as e:
      raise TrainingError(f'Phase {phase.name}: {e}') from e
    if resume_step is not None:
      abstract = jax.eval_shape(lambda p: {'params': p, 'opt_state': optimizer.init(p),
                                           'step': jnp.zeros((), jnp.int32)}, params)
      abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                             sharding=self.replicated), abstract)
      state = self.checkpoints.restore(resume_step, abstract)
      if progress['phase_done']:           # stopped right after this phase ended
        return state['params']
    else:
      state = self._state(params, optimizer)
    train_step = jax.jit(
        steps.make_train_step(model, optimizer, loss=phase.loss, mixup_alpha=phase.mixup_alpha,
                              batch_split=phase.batch_split),
        in_shardings=(self.replicated, self.batch_sharding, None, None),
        out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    eval_step = jax.jit(steps.make_eval_step(model, loss=phase.loss),
                        in_shardings=(self.replicated, self.batch_sharding),
                        out_shardings=self.replicated)
    make_eval = lambda ids, source: input_pipeline.eval_data(
        source, global_batch_size=phase.eval_batch_size or phase.batch_size, crop=phase.crop,
        ids=ids, multi_hot=phase.loss == 'sigmoid')
    test_data = make_eval(None, data['test'])
    val_data = make_eval(data['val_ids'], data['source']) if data['val_ids'] is not None else None
    plateau = phases.Plateau(phase.plateau_patience, phase.plateau_factor,
                             phase.early_stopping_patience)
    if progress.get('plateau'):
      plateau = phases.Plateau(**progress['plateau'])

    start = progress['phase_step']
    total = phase.total_steps
    w.print(f'== {phase.name}: {len(data["ids"])} training examples, {total} steps of '
            f'{phase.batch_size}, lr {phase.lr:.4g} ({phase.lr_schedule}), '
            f'{phase.resize}->{phase.crop}px, mixup {phase.mixup_alpha}, '
            f'freeze {phase.freeze!r}, init {phase.init}')
    rng = jax.random.PRNGKey(phase.seed + phase.index)
    batches = self._train_batches(phase, data, start)
    progress_line = metrics.Progress(total, phase.batch_size, start)
    pending, stopped_early, done = [], False, start

    def last_good():
      step = self.checkpoints.latest_step()
      return ('no checkpoint was saved yet' if step is None else
              f'the last good checkpoint is step {step}, which a rerun resumes from')

    def save(step_in_phase, phase_done=False):
      if not all_finite(state['params']):     # never replace a good checkpoint by a bad one
        raise TrainingError(
            f'Parameters became NaN/inf in phase {phase.name} by step {step_in_phase}. '
            f'Stopped without saving; {last_good()}. Lower the learning rate '
            f'(lr={phase.lr}) or check the data.')
      progress.update(phase_step=step_in_phase, phase_done=phase_done, plateau=vars(plateau),
                      elapsed_s=time.perf_counter() - start_time)
      self.checkpoints.save(progress['global_step'], state, dict(progress))

    for step in range(start, total):
      lr = phases.learning_rate(phase, step, plateau.scale)
      state, out = train_step(state, self._global(next(batches)), np.float32(lr), rng)
      pending.append(out['loss'])
      progress['global_step'] += 1
      progress['examples_seen'] += phase.batch_size
      done = step + 1
      log_now = done % phase.log_every == 0 or done == total
      ckpt_now = phase.checkpoint_every and done % phase.checkpoint_every == 0
      stop_now = self._stop_requested(done, phase)
      if log_now or ckpt_now or stop_now:
        losses = np.asarray(jax.device_get(pending))
        pending = []
        if not np.all(np.isfinite(losses)):
          raise TrainingError(
              f'Loss became {losses[-1]} in phase {phase.name} at step {done}. Stopped without '
              f'saving; {last_good()}. Lower the learning rate (lr={phase.lr}) or check the '
              f'data.')
        line, rate = progress_line.line(done, float(losses.mean()), lr, f'[{phase.name}] ')
        w.print(line)
        w.write(progress['global_step'], loss=float(losses.mean()), lr=lr, images_per_s=rate,
                phase=phase.name)
      if phase.eval_every and done % phase.eval_every == 0 and done < total:
        stopped_early = self._eval_and_log(eval_step, state, test_data, val_data, plateau,
                                           phase, progress)
      if ckpt_now or stop_now:
        save(done)
      if stop_now:
        self.checkpoints.close()
        w.print(f'SIGTERM: saved checkpoint at step {progress["global_step"]}; rerun the same '
                f'command to resume.')
        sys.exit(0)
      if stopped_early:
        w.print(f'Early stopping after {done} steps: no better validation loss in '
                f'{phase.early_stopping_patience} evaluations.')
        break
    result = {'phase': phase.name, **self._final_eval(eval_step, state, test_data, val_data,
                                                      phase, progress),
              'steps': done, 'examples_seen': progress['examples_seen']}
    progress['results'].append(result)
    save(done, phase_done=True)
    return state['params']

  def _stop_requested(self, step, phase):
    """SIGTERM reaches processes at different times; agree on it at logging steps."""
    if jax.process_count() == 1:
      return self.stop_requested
    if step % phase.log_every == 0:
      flags_ = multihost_utils.process_allgather(np.int32(self.stop_requested))
      return bool(np.max(flags_))
    return False

  def _eval_and_log(self, eval_step, state, test_data, val_data, plateau, phase, progress):
    test = self._evaluate(eval_step, state['params'], test_data)
    scalars = {'test_top1': test['top1'], 'test_top5': test['top5'], 'test_loss': test['loss']}
    if phase.fewshot_shots:
      scalars.update(fewshot.probe_phase(phase, self._model(progress['arch'], phase),
                                         state['params']))
    stop = False
    if val_data is not None:
      val = self._evaluate(eval_step, state['params'], val_data)
      scalars.update(val_top1=val['top1'], val_loss=val['loss'])
      if phase.lr_schedule == 'plateau' or phase.early_stopping_patience:
        stop = plateau.update(val['loss'])
    self.writer.write(progress['global_step'], **scalars)
    self.writer.print(f'[{phase.name}] eval: ' + '  '.join(f'{k} {v:.4f}'
                                                         for k, v in scalars.items()))
    return stop

  def _final_eval(self, eval_step, state, test_data, val_data, phase, progress):
    test = self._evaluate(eval_step, state['params'], test_data)
    result = {'top1': test['top1'], 'top5': test['top5'], 'test_examples': test['count']}
    if phase.fewshot_shots:
      result.update(fewshot.probe_phase(phase, self._model(progress['arch'], phase),
                                        state['params']))
    if val_data is not None:
      result['val_top1'] = self._evaluate(eval_step, state['params'], val_data)['top1']
    self.writer.write(progress['global_step'], test_top1=test['top1'], test_top5=test['top5'])
    self.writer.print(f'[{phase.name}] final: top-1 {test["top1"]:.4f}  top-5 '
                      f'{test["top5"]:.4f} on {test["count"]} {phase.eval_split} examples')
    return result


def run(config: ml_collections.ConfigDict, workdir) -> dict:
  """Train `config` in `workdir` (resuming what is there); returns results.json's content."""
  return Trainer(config, workdir).run()


_CONFIG = config_flags.DEFINE_config_file('config', DEMO_CONFIG, 'Path to a config file, '
                                          'optionally with ":arg" (see configs/).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (resumes what is there).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for several processes off Cloud TPU.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')


def initialize_distributed():
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):   # a multi-host Cloud TPU VM slice
    jax.distributed.initialize()


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required (a directory for checkpoints and metrics).')
  logging.set_verbosity(logging.WARNING)     # orbax logs every save at INFO
  initialize_distributed()
  try:
    results = run(_CONFIG.value, _WORKDIR.value)
  except TrainingError as e:
    print(f'ERROR: {e}', file=sys.stderr, flush=True)
    sys.exit(1)
  if metrics.is_logging_process():
    for result in results['phases']:
      print(f'{result["phase"]:>12}: top-1 {result["top1"]:.4f}  top-5 {result["top5"]:.4f}  '
            f'({result["steps"]} steps)')
    print(f'Done in {results["wall_time_s"]:.0f} s: {results["steps"]} steps, '
          f'{results["examples_seen"]} examples processed. {_WORKDIR.value}/results.json')


if __name__ == '__main__':
  app.run(main)
