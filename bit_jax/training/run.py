"""A run: config -> plan -> for each phase: starting weights -> loop -> final evaluation ->
final.npz and results.json.

    results = bit_jax.training.run.run(config, workdir)

Resume is automatic: a workdir with checkpoints continues from the newest, replaying the same
data stream and rngs, so a run killed after step s finishes as if never interrupted. SIGTERM
saves a checkpoint and raises `errors.Stopped`. Outputs in the workdir (`run_state.Workdir`):
`metrics.jsonl`, `tensorboard/`, `phases.json` (every resolved value), `<phase>_train_ids.json`
(the exact training examples of each phase), `checkpoints/`, `<phase>.npz` (each phase's final
weights in the official BiT layout, with the class names and crop), `results.json` and
`final.npz` (the last phase's).
"""

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from typing import Optional

import jax
import ml_collections
import numpy as np

from bit_jax.data import input_pipeline, subsets
from bit_jax.models import pretrained
from bit_jax.recipe import fields
from bit_jax.recipe import plan as plan_lib
from bit_jax.recipe.plan import Phase, Plan
from bit_jax.runtime import files, metrics
from bit_jax.runtime.errors import ConfigError, Stopped
from bit_jax.runtime.lock import WorkdirInUse, WorkdirLock
from bit_jax.runtime.parallel import DataParallel, broadcast_text
from bit_jax.runtime.preemption import StopRequest
from bit_jax.training import evaluators as evaluators_lib
from bit_jax.training import programs, weights
from bit_jax.training.checkpoint import Checkpoints
from bit_jax.training.loop import PhaseLoop, Services
from bit_jax.training.run_state import RunState, Workdir, train_state_shapes


def run(
  config: ml_collections.ConfigDict,
  workdir,
  *,
  stop: StopRequest | None = None,
  accept_changes: Sequence[str] = (),
  claim: Optional['Claim'] = None,
  given: Sequence[str] = (),
  shared_top: bool = False,
) -> dict:
  """Train `config` in `workdir` (resuming what is there); returns results.json's content.
  `given`, `shared_top`: a sweep's run, whose fields `given` over a base that other runs
  share are refused where a phase sets them (see `fields.check_reach`)."""
  check_writable(workdir)
  plan = plan_lib.resolve(config, given=given, shared_top=shared_top)
  return execute(plan, workdir, stop=stop, accept_changes=accept_changes, claim=claim)


def execute(
  plan: Plan,
  workdir,
  *,
  stop: StopRequest | None = None,
  accept_changes: Sequence[str] = (),
  claim: Optional['Claim'] = None,
) -> dict:
  """Run a resolved plan. `stop`: a `StopRequest` already installed by the caller (the sweep
  runner), else one is installed for the duration of the run. `claim`: the workdir already
  claimed by the caller, else it is claimed here (`WorkdirInUse` if another job holds it).
  A workdir that holds a run of another plan is refused, unless every changed field is in
  `accept_changes`."""
  workdir = Workdir(workdir)
  check_writable(workdir.root)
  with contextlib.ExitStack() as stack:
    stop = stop or stack.enter_context(StopRequest())
    if stop.requested:
      raise Stopped('Stopped on request before the run started.')
    lock = (claim or stack.enter_context(claimed(workdir.root))).lock
    services, resumed = _open(plan, workdir, stack, stop, lock, accept_changes)
    run_state = resumed[1] if resumed else RunState()
    if resumed and _finished(plan, run_state) and workdir.results.exists():
      if workdir.final.exists():  # a rerun of a finished run changes nothing
        services.writer.print(f'{workdir.root} holds this run, finished; nothing to do.')
        return files.read_json(workdir.results)
    run_state = dataclasses.replace(run_state, plan=tuple(plan.records()))
    params = None
    for phase in plan.phases[run_state.phase :]:
      resume = resumed[0] if resumed and phase.index == run_state.phase else None
      last = phase is plan.phases[-1]
      params, run_state = _run_phase(phase, params, run_state, resume, services, last=last)
      if services.writer.enabled:  # every phase's weights outlive the run, not only the last
        _write_weights(phase, jax.device_get(params), workdir.phase_weights(phase.name))
    results = {
      'final': run_state.results[-1],
      'phases': list(run_state.results),
      'steps': run_state.global_step,
      'examples_seen': run_state.examples_seen,
      'wall_time_s': time.perf_counter() - services.started_at,
    }
    if services.writer.enabled:
      _write_weights(plan.phases[-1], jax.device_get(params), workdir.final)
      files.write_json(workdir.results, results)
  return results


def _finished(plan: Plan, run_state: RunState) -> bool:
  return run_state.phase == len(plan.phases) - 1 and run_state.phase_done


def _open(plan, workdir, stack, stop, lock, accept_changes):
  """(services, the newest checkpoint's (number, RunState) or None) of a run being started or
  resumed; the plan and ids are written once the resume check has passed."""
  checkpoints = Checkpoints(workdir.checkpoints, keep=plan.phases[0].settings.keep_checkpoints)
  stack.callback(checkpoints.close)
  resumed = checkpoints.latest()
  run_state = resumed[1] if resumed else RunState()
  accepted = _check_resume(plan, workdir, run_state, accept_changes) if resumed else {}
  writer = metrics.MetricWriter(
    workdir.metrics, workdir.tensorboard, enabled=jax.process_index() == 0
  )
  stack.callback(writer.close)
  if resumed:
    writer.print(
      f'Resuming from {workdir.checkpoints} checkpoint {resumed[0]} (step '
      f'{run_state.global_step}: phase {run_state.phase}, step {run_state.phase_step}).'
    )
  if writer.enabled:
    _write_plan(plan, workdir, accepted, run_state)
    if not resumed or accepted:  # once per plan: TensorBoard shows each phase's settings
      writer.write_plan(plan.records(), run_state.global_step)
  started_at = time.perf_counter() - run_state.elapsed_s
  services = Services(DataParallel(), checkpoints, writer, stop, lock, plan.data_shards, started_at)
  return services, resumed


def check_writable(workdir) -> None:
  """Refuse a workdir that cannot be written, before any work."""
  root = Workdir(workdir).root
  try:
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f'.write_test.{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise ConfigError(
      f'Cannot write to workdir {root} ({e.strerror or e}). Pick a directory you can write to.'
    ) from None


@dataclasses.dataclass(frozen=True)
class Claim:
  """A workdir this job owns: process 0 holds its lock (`lock` is None on the others)."""

  lock: WorkdirLock | None


@contextlib.contextmanager
def claimed(workdir) -> Iterator[Claim]:
  """Own `workdir` for the block: its lock, held by process 0; every process learns whether
  it was granted, so all of them raise `WorkdirInUse` together."""
  workdir = Workdir(workdir)
  workdir.root.mkdir(parents=True, exist_ok=True)
  lock = WorkdirLock(workdir.lock) if jax.process_index() == 0 else None
  refusal = ''
  if lock is not None:
    try:
      note = lock.acquire()
      if note:
        print(note, flush=True)
    except WorkdirInUse as e:
      refusal = str(e)
  if jax.process_count() > 1:
    refusal = broadcast_text(refusal)
  if refusal:
    raise WorkdirInUse(refusal)
  try:
    yield Claim(lock)
  finally:
    if lock is not None:
      lock.release()


def _check_resume(
  plan: Plan, workdir: Workdir, run_state: RunState, accept_changes: Sequence[str]
) -> dict:
  """Refuse to resume a run under a plan that trains differently than the one its checkpoint
  was made with (or, for checkpoints that do not carry it, phases.json's), unless the caller
  accepts every changed field; phases that have trained can never change or go, nor can a
  phase end before the step it reached. Returns the accepted changes."""
  before = _trained_plan(workdir, run_state)
  if before is None:
    return {}
  found, given = fields.changes(before, plan.records())
  if not found:
    return {}
  listing = '; '.join(f'{name}: {", ".join(lines)}' for name, lines in found.items())
  # Derived values (a schedule scaled to a new total_steps) follow the fields that caused
  # them; when nothing given changed (the data did), the derived ones must be accepted.
  changed = sorted(given) or sorted(
    {line.split(':')[0] for lines in found.values() for line in lines}
  )
  if any(f not in accept_changes for f in changed):
    raise ConfigError(
      f'{workdir.root} holds a run trained with another config ({listing}). Rerun with '
      f'the config it was trained with, use a new workdir, or accept the change on purpose '
      f'with --accept_changes={",".join(changed)}.'
    )
  _check_acceptable(plan, workdir, run_state, before, found, listing)
  return found


def _trained_plan(workdir: Workdir, run_state: RunState) -> list[dict] | None:
  if run_state.plan:
    return list(run_state.plan)
  return files.read_json(workdir.plan) if workdir.plan.exists() else None


def _check_acceptable(plan, workdir, run_state, before, found, listing) -> None:
  """Accepted changes that cannot be applied are refused before anything is written."""
  names = [p.name for p in plan.phases]
  done = run_state.phase + (1 if run_state.phase_done else 0)
  finished = [name for name in found if name in names and names.index(name) < done]
  fresh = f'Start a new workdir (init={workdir.final} continues from its weights).'
  if finished:
    raise ConfigError(
      f'Phase {", ".join(finished)} of {workdir.root} has finished training; '
      f'its settings can no longer change ({listing}). {fresh}'
    )
  removed = [p.get('name') for p in before[: run_state.phase + 1] if p.get('name') not in names]
  if removed or run_state.phase >= len(plan.phases):
    raise ConfigError(
      f'Phase {", ".join(removed)} of {workdir.root} has trained; it cannot be removed '
      f'({listing}). {fresh}'
    )
  current = plan.phases[run_state.phase].settings
  if not run_state.phase_done and current.total_steps < run_state.phase_step:
    raise ConfigError(
      f'Phase {current.name} of {workdir.root} has reached step {run_state.phase_step}; '
      f'total_steps={current.total_steps} would end it before that. Use total_steps >= '
      f'{run_state.phase_step}, or {fresh[0].lower()}{fresh[1:]}'
    )


def _write_plan(plan: Plan, workdir: Workdir, accepted: dict, run_state: RunState) -> None:
  """phases.json, plan_changes.json and the ids, each written only if it changes."""
  records = plan.records()
  if accepted:  # the record of how the run was trained keeps every change made to it
    history = files.read_json(workdir.plan_changes) if workdir.plan_changes.exists() else []
    files.write_json(
      workdir.plan_changes,
      history
      + [
        {
          'time': time.strftime('%Y-%m-%d %H:%M:%S'),
          'global_step': run_state.global_step,
          'previous': _trained_plan(workdir, run_state),
          'changes': accepted,
        }
      ],
    )
  if not workdir.plan.exists() or files.read_json(workdir.plan) != records:
    files.write_json(workdir.plan, records)
  for phase in plan.phases:
    s = phase.settings
    if workdir.train_ids(s.name).exists() and not accepted:
      continue  # the resume check found the same data (its digest is in the plan)
    subsets.save_ids(
      workdir.train_ids(s.name),
      phase.data.train_ids,
      dataset=s.dataset,
      split=s.train_split,
      shots=s.shots,
      fraction=s.fraction,
      seed=s.subset_seed,
      classes=s.classes,
    )


def _write_weights(phase: Phase, params, path) -> None:
  arrays = pretrained.params_to_npz(params)
  if phase.data.train.class_names:
    arrays['bit_jax/class_names'] = np.array(phase.data.train.class_names)
  arrays['bit_jax/image_size'] = np.array(phase.settings.crop)
  files.write_npz(path, arrays)


def _start_line(phase: Phase) -> str:
  s = phase.settings
  scaling = ', scaled linearly with the batch' if s.lr_scaling == 'linear' else ''
  return (
    f'== {s.name}: {s.num_examples} training examples, {s.total_steps} steps of '
    f'{s.batch_size}, lr {s.lr:.4g} ({s.lr_schedule}{scaling}), '
    f'{s.resize}->{s.crop}px, mixup {s.mixup_alpha}, init {s.init} '
    f'({phase.architecture.name}), head {s.head}, freeze {s.freeze!r}'
    + (f', reinit {s.reinit!r}' if s.reinit else '')
  )


def _starting_state(phase: Phase, previous_params, run_state, resume, services):
  """(optimizer, train state on the devices, run state) where `phase` starts or resumes."""
  s, parallel = phase.settings, services.parallel
  model = phase.model()
  optimizer = programs.optimizer(
    model, momentum=s.momentum, weight_decay=s.weight_decay, freeze=s.freeze
  )
  if resume is not None:
    saved = services.checkpoints.restore(resume, train_state_shapes(model, optimizer))
    return optimizer, jax.device_put(saved, parallel.replicated), run_state
  run_state = dataclasses.replace(
    run_state, phase=phase.index, phase_step=0, phase_done=False, plateau=None
  )
  params = weights.initial_params(phase, previous_params)
  return optimizer, programs.train_state_builder(optimizer, parallel)(params), run_state


def _run_phase(
  phase: Phase, previous_params, run_state: RunState, resume, services: Services, *, last: bool
) -> tuple[dict, RunState]:
  """Train one phase from its start or from checkpoint `resume`; returns its final params."""
  s = phase.settings
  optimizer, train_state, run_state = _starting_state(
    phase, previous_params, run_state, resume, services
  )
  if run_state.phase_done:  # resumed right after this phase ended
    return train_state['params'], run_state
  services.writer.print(_start_line(phase))
  for note in phase.notes:
    services.writer.print(f'   note: {note}')
  loop = PhaseLoop(phase, optimizer, services, evaluators_lib.build(phase, services.parallel))
  batches = input_pipeline.process_batches(
    phase.data.train,
    data_shards=services.data_shards,
    ids=phase.data.train_ids,
    global_batch_size=s.batch_size,
    crop=s.crop,
    resize=s.resize,
    seed=s.seed + phase.index,
    preprocess=s.preprocess,
    start_step=run_state.phase_step,
    multi_hot=s.loss == 'sigmoid',
  )
  train_state, run_state, outcome = loop.run(train_state, run_state, batches)
  if outcome == 'stopped':
    raise Stopped(
      f'Stopped on request at step {run_state.global_step}; the checkpoint is '
      f'saved, rerun the same command to resume.'
    )
  run_state = loop.finish(train_state, run_state)
  if services.stop.agreed() and not last:
    raise Stopped(
      f'Stopped on request after phase {s.name}; rerun the same command to '
      f'resume with the next phase.'
    )
  return train_state['params'], run_state
