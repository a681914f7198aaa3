"""One phase's training loop: step, log, evaluate, save, stop. It returns what happened and
leaves exits to the command line.

Every `log_every` steps the mean loss since the last report is checked (a NaN/inf stops the
run before it can be saved) and printed with the rate and ETA. Every `eval_every` steps the
phase's evaluators run; the `monitor` metric of the validation holdout (its loss or top-1)
drives reduce-on-plateau and early stopping. Every `checkpoint_every` steps, and when a stop
is requested, the train state and the `RunState` are saved. The last step is never saved here: `finish` saves the
phase's end, with its final evaluation, once.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from bit_jax.recipe import hyperrule, plateau
from bit_jax.recipe.plan import Phase
from bit_jax.runtime import metric_names
from bit_jax.runtime.errors import RunError
from bit_jax.runtime.lock import WorkdirLock
from bit_jax.runtime.metrics import MetricWriter, ProgressLine
from bit_jax.runtime.parallel import DataParallel
from bit_jax.runtime.preemption import StopRequest
from bit_jax.training import evaluators as evaluators_lib
from bit_jax.training import programs
from bit_jax.training.checkpoint import Checkpoints
from bit_jax.training.run_state import RunState


@dataclasses.dataclass(frozen=True)
class Services:
  """What every phase of a run shares: devices, checkpoints, metrics and the stop flag."""

  parallel: DataParallel
  checkpoints: Checkpoints
  writer: MetricWriter
  stop: StopRequest
  lock: WorkdirLock | None  # held by process 0 (None elsewhere); refreshed while alive
  data_shards: int  # the input's shards (a multiple of the processes)
  started_at: float  # `time.perf_counter()` minus the wall time of earlier processes


@jax.jit
def all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class PhaseLoop:
  def __init__(self, phase: Phase, optimizer, services: Services, evaluators: list):
    s = self.settings = phase.settings
    self.phase, self.services, self.evaluators = phase, services, evaluators
    self.train_step = programs.train_step(
      phase.model(),
      optimizer,
      services.parallel,
      loss=s.loss,
      mixup_alpha=s.mixup_alpha,
      batch_split=s.batch_split,
    )
    self.rng = jax.random.PRNGKey(s.seed + phase.index)
    self.plateau = plateau.Plateau(
      s.plateau_patience,
      s.plateau_factor,
      s.early_stopping_patience,
      mode=metric_names.MONITOR_MODES[s.monitor],
    )
    self._pending_losses = []

  def run(self, train_state, run_state: RunState, batches) -> tuple[dict, RunState, str]:
    """Train from `run_state.phase_step`; returns the state and 'done', 'early_stop' or
    'stopped' (a stop was requested; the state is saved)."""
    s, parallel = self.settings, self.services.parallel
    if run_state.plateau:
      self.plateau = plateau.Plateau(**run_state.plateau)
    line = ProgressLine(s.total_steps, s.batch_size, run_state.phase_step)
    for step in range(run_state.phase_step, s.total_steps):
      lr = hyperrule.learning_rate(s, step, self.plateau.scale)
      train_state, out = self.train_step(
        train_state, parallel.global_batch(next(batches)), np.float32(lr), self.rng
      )
      self._pending_losses.append(out['loss'])
      done, last = step + 1, step + 1 == s.total_steps
      run_state = dataclasses.replace(
        run_state,
        phase_step=done,
        global_step=run_state.global_step + 1,
        examples_seen=run_state.examples_seen + s.batch_size,
      )
      stop = not last and self._stop_now(done)
      if done % s.log_every == 0 or last or stop:
        self._log(line, run_state, lr)
      paused = time.perf_counter()  # evaluations and saves are not training speed
      early = (
        s.eval_every
        and done % s.eval_every == 0
        and not last
        and self._evaluate(train_state, run_state)
      )
      # An early stop's step is saved once, by `finish` (checkpoints are named by step).
      periodic = s.checkpoint_every and done % s.checkpoint_every == 0 and not last and not early
      if stop or periodic:
        self.save(train_state, run_state)
      line.exclude(time.perf_counter() - paused)
      if stop:
        return train_state, run_state, 'stopped'
      if early:
        self.services.writer.print(
          f'[{s.name}] early stopping after {done} steps: no better '
          f'{s.monitor} in {s.early_stopping_patience} evaluations.'
        )
        return train_state, run_state, 'early_stop'
    return train_state, run_state, 'done'

  def finish(self, train_state, run_state: RunState) -> RunState:
    """The phase's final evaluation, recorded in the run state and saved."""
    s, writer = self.settings, self.services.writer
    metrics = evaluators_lib.evaluate(self.evaluators, train_state['params'])
    result = {
      'phase': s.name,
      **metrics,
      'steps': run_state.phase_step,
      'examples_seen': run_state.examples_seen,
    }
    writer.write(run_state.global_step, phase=s.name, **metrics)
    writer.print(
      f'[{s.name}] final: '
      + '  '.join(
        f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in metrics.items()
      )
    )
    run_state = dataclasses.replace(
      run_state, phase_done=True, plateau=None, results=(*run_state.results, result)
    )
    self.save(train_state, run_state)
    return run_state

  def save(self, train_state, run_state: RunState) -> None:
    checkpoints = self.services.checkpoints
    if not all_finite(train_state['params']):  # never replace a good checkpoint by a bad one
      raise RunError(
        f'Parameters became NaN/inf in phase {self.settings.name} by step '
        f'{run_state.phase_step}. Stopped without saving; {self._last_good()}. '
        f'Lower the learning rate (lr={self.settings.lr}) or check the data.'
      )
    elapsed = time.perf_counter() - self.services.started_at
    checkpoints.save(
      train_state,
      dataclasses.replace(
        run_state,
        elapsed_s=elapsed,
        plateau=None if run_state.phase_done else dataclasses.asdict(self.plateau),
      ),
    )

  def _last_good(self) -> str:
    latest = self.services.checkpoints.latest()
    if latest is None:
      return 'no checkpoint was saved yet'
    return f'the last good checkpoint is step {latest[1].global_step}, which a rerun resumes from'

  def _stop_now(self, done: int) -> bool:
    """SIGTERM reaches processes at different times; several agree on it at logging steps."""
    if jax.process_count() == 1:
      return self.services.stop.requested
    return done % self.settings.log_every == 0 and self.services.stop.agreed()

  def _log(self, line: ProgressLine, run_state: RunState, lr: float) -> None:
    s, writer = self.settings, self.services.writer
    losses = np.asarray(jax.device_get(self._pending_losses))
    self._pending_losses = []
    if not np.all(np.isfinite(losses)):
      raise RunError(
        f'Loss became {losses[-1]} in phase {s.name} at step '
        f'{run_state.phase_step}. Stopped without saving; {self._last_good()}. '
        f'Lower the learning rate (lr={s.lr}) or check the data.'
      )
    text, rate = line.line(run_state.phase_step, float(losses.mean()), lr, f'[{s.name}] ')
    writer.print(text)
    writer.write(
      run_state.global_step, loss=float(losses.mean()), lr=lr, images_per_s=rate, phase=s.name
    )
    if self.services.lock is not None:
      self.services.lock.heartbeat()

  def _evaluate(self, train_state, run_state: RunState) -> bool:
    """Evaluate and log; True when early stopping ends the phase."""
    s = self.settings
    metrics = evaluators_lib.evaluate(self.evaluators, train_state['params'])
    self.services.writer.write(run_state.global_step, phase=s.name, **metrics)
    self.services.writer.print(
      f'[{s.name}] eval: '
      + '  '.join(f'{k} {v:.4f}' for k, v in metrics.items() if isinstance(v, float))
    )
    if s.monitor in metrics and (s.lr_schedule == 'plateau' or s.early_stopping_patience):
      return self.plateau.update(metrics[s.monitor])
    return False
