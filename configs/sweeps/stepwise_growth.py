"""Growing the training set step by step: does it save compute at the same accuracy?

After Prasad et al.: nested stratified subsets A ⊂ B ⊂ C ⊂ D ⊂ O of 20/40/60/80/100% of the
training images, trained one after the other with the weights carried over, against one
baseline run on O. Reading of the paper's schedule: the batch is b in phase A, then 2b, 3b, 4b
in B, C, D and b again in O ("2b, 3b, 4b, b along the phases" after A); the learning rate is
λ/b in the first and last phase and (λ/10)/(n·b) in between, n being the phase's batch
multiple (`prasad_learning_rate`). The baseline trains on O with batch b and lr λ/b. Every
phase, and the baseline, stops early when the validation loss (10% of each class, held out
of all subsets) stops improving, so compute is measured, not assumed: results.csv's
`examples_seen` and `compute_epochs` (examples processed / M, M = |O|) are the check of the
claimed ~40% saving.

    python -m bit_jax.sweep --config=configs/sweeps/stepwise_growth.py --workdir=/tmp/growth
    python -m bit_jax.sweep --config=configs/sweeps/stepwise_growth.py:mini \
        --workdir=/tmp/growth_mini                        # ~25 min on 2 CPU cores

Full scale: BiT-M-R50x1 on CIFAR-10 at the HyperRule resolution, b = 128, λ/b = 0.003 x 128/512
(BiT's lr scaled linearly to batch 128), at most 10 epochs a phase (30 for the baseline). The miniature pre-trains
R14x0.5 on CIFAR-10 classes 0-4 (its 'upstream' run), then grows a training set of classes
5-9 at 32 px with b = 32, λ/b = 0.01, at most 4 epochs a phase (12 for the baseline), each
run with 5 seeds. It ends with `11 runs finished: <workdir>/results.md,
<workdir>/stepwise_growth.png`: test top-1 at every evaluation against the examples processed
so far (evals.csv); results.md pairs stepwise with baseline, seed by seed.
"""

from bit_jax.defaults import mini_base, mini_upstream_run, study_config, study_scale

FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
NAMES = ('A', 'B', 'C', 'D', 'O')
MULTIPLES = (1, 2, 3, 4, 1)  # batch of each phase in units of b


def prasad_learning_rate(lam: float, base_batch: int, multiple: int, outer: bool) -> float:
  """λ/b in the first and last phase (`outer`), (λ/10)/(n·b) in the phases between."""
  if outer:
    return lam / base_batch
  return lam / 10 / (multiple * base_batch)


SCALES = {
  'full': dict(
    base=dict(model='R50x1', init='BiT-M-R50x1', checkpoint_every=1000),
    b=128,
    lr=0.003 * 128 / 512,
    phase_epochs=10,
    eval_examples=10_000,
    target={},
    upstream_runs=(),
  ),
  'mini': dict(
    base=mini_base(init='{workdir}/upstream/final.npz'),
    b=32,
    lr=0.01,
    phase_epochs=4,
    eval_examples=1000,
    target=dict(classes=(5, 6, 7, 8, 9)),
    upstream_runs=(mini_upstream_run(),),
  ),
}


def get_config(arg='full'):
  scale, base = study_scale(SCALES, arg)
  b, lam = scale['b'], scale['lr'] * scale['b']
  base.update(
    val_fraction=0.1,
    lr_schedule='plateau',
    plateau_patience=1,
    early_stopping_patience=2,
    eval_every=max(1, round(scale['eval_examples'] / b)),
  )
  phases = []
  for index, (name, fraction, multiple) in enumerate(zip(NAMES, FRACTIONS, MULTIPLES)):
    batch = multiple * b
    phases.append(
      dict(
        name=name,
        fraction=fraction,
        batch_size=batch,
        epochs=scale['phase_epochs'],
        lr=prasad_learning_rate(lam, b, multiple, outer=index in (0, len(NAMES) - 1)),
        eval_every=max(1, round(scale['eval_examples'] / batch)),
      )
    )
  runs = list(scale['upstream_runs'])
  runs.append(dict(name='stepwise', phases=tuple(phases), **scale['target']))
  runs.append(
    dict(
      name='baseline',
      batch_size=b,
      lr=lam / b,
      epochs=scale['phase_epochs'] * sum(FRACTIONS),
      **scale['target'],
    )
  )
  return study_config(
    base,
    runs,
    dict(
      x='examples_seen',
      y='top1',
      series='name',
      points='evals',
      compare=(dict(column='name', a='stepwise', b='baseline', y=('top1', 'examples_seen')),),
      xlabel='examples processed (stepwise: A, B, C, D, then O)',
      runs=('stepwise', 'baseline'),
      title=f'Stepwise growth A..O vs. one run on O ({arg})',
    ),
  )
