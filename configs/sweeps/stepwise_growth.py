"""Growing the training set step by step: does it save compute at the same accuracy?

After Prasad et al.: nested stratified subsets A ⊂ B ⊂ C ⊂ D ⊂ O of 20/40/60/80/100% of the
training images, trained one after the other with the weights carried over, against one
baseline run on O. This BiT variant (`:full`, `:mini`) fine-tunes BiT with its own rule, not
the paper's: the batch is b in phase A, then 2b, 3b, 4b in B, C, D and b again in O; the
learning rate is λ/b on the mean loss in the first and last phase and (λ/10)/(n·b) in
between, n being the phase's batch multiple (`prasad_learning_rate`; eq. 9 as written, with
n the number of subsets and λ carried from phase to phase, is `:paper`'s, see
bit_jax/studies/stepwise.py). The baseline trains on O with batch b and lr λ/b. Every
phase, and the baseline, stops early when the validation loss (10% of each class, held out
of all subsets) stops improving, so compute is measured, not assumed: results.csv's
`examples_seen` and `compute_epochs` (examples processed / M, M = |O|) are the check of the
claimed ~40% saving.

    python -m bit_jax.sweep --config=configs/sweeps/stepwise_growth.py --workdir=/tmp/growth
    python -m bit_jax.sweep --config=configs/sweeps/stepwise_growth.py:mini \
        --workdir=/tmp/growth_mini                        # ~27 min on 2 CPU cores

Full scale: BiT-M-R50x1 on CIFAR-10 at the HyperRule resolution, b = 128, λ/b = 0.003 x 128/512
(BiT's lr scaled linearly to batch 128), at most 10 epochs a phase (30 for the baseline). The miniature pre-trains
R14x0.5 on CIFAR-10 classes 0-4 (its 'upstream' run), then grows a training set of classes
5-9 at 32 px with b = 32, λ/b = 0.01, at most 4 epochs a phase (12 for the baseline), each
run with 5 seeds. It ends with `11 runs finished: <workdir>/results.md,
<workdir>/stepwise_growth.png`: test top-1 at every evaluation against the examples processed
so far (evals.csv); results.md pairs stepwise with baseline, seed by seed.

The paper's own protocol, `:paper` (CIFAR-100; `:paper,cifar10` for CIFAR-10) and its CPU
miniature `:paper,mini`:

    python -m bit_jax.sweep --config=configs/sweeps/stepwise_growth.py:paper \
        --workdir=/tmp/growth_paper
    python -m bit_jax.sweep --config=configs/sweeps/stepwise_growth.py:paper,mini \
        --workdir=/tmp/growth_paper_mini              # see MINI_PAPER for its sizes

Point by point against Prasad et al.:

* follows: five nested stratified subsets A ⊂ B ⊂ C ⊂ D ⊂ O (20..100%), batch b, 2b, 3b, 4b,
  b; 20 epochs a phase with the lr x0.1 (γ) every 10 (`lr_schedule='step'`); the baseline on
  O for 100 epochs with x0.1 every 30; from scratch; no augmentation (`preprocess='none'`);
  SGD momentum 0.9, weight decay 1e-4; λ = 0.001; CIFAR-100 at 224 px; top-1 and top-5;
  fixed lengths, no early stopping, so the claimed cost (60 epochs of data against 100) is
  what runs and `compute_epochs` checks it;
* eq. 9 as written (bit_jax/studies/stepwise.py says how it was read: n = 5 subsets, λ carried to
  the next phase, λ′ times summed gradients): the rates fall 10·n·b-fold a phase, so C, D
  and O hardly train; the baseline trains with phase A's rate (λ·b on our mean loss);
* cannot follow, ours instead: the network (not restated here; BiT's R50x1 from scratch),
  b = 128 (the batch is a free choice of the paper's), no warmup (none stated), eval on the
  test split after every phase (the paper reports the final test accuracy).

The miniature changes sizes only: R14x0.5 at 16 px on three classes of the shared CIFAR-10
subset (5-7, 1,494 images = O), b = 16, 2 epochs a phase (x0.1 after 1), the baseline 10
epochs (x0.1 every 3), 5 seeds: 10 trainings, 31 minutes of training (the trainings' own
wall times summed) on 2 CPU cores shared with other jobs. It ends with `10 runs finished:
<workdir>/results.md, ...`; with 5 seeds (docs/studies/stepwise_growth_paper/) stepwise ends
at 46.9% [41.9, 52.0] test top-1 and the baseline at 68.6% [66.1, 71.2] (-21.7 points,
Holm-adjusted p < 0.001), after 9,072 and 14,944 examples (6.1 and 10 epochs of O):
the claimed 60 epochs of data against 100, but at eq. 9's rates B..O hardly learn (top-5 is
1.0 for both: three classes).
"""

from bit_jax.recipe.defaults import base_config
from bit_jax.studies import stepwise
from bit_jax.studies.study_configs import (
  SHARED_TFDS,
  mini_base,
  mini_upstream_run,
  study_args,
  study_config,
  study_scale,
)

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


# The paper's protocol at its size, and its CPU miniature (sizes only).
PAPER = dict(
  base=dict(model='R50x1', dataset='cifar100', resize=224, crop=224, checkpoint_every=1000),
  b=128,
  phase_epochs=20,
  phase_decays=(10,),
  baseline_epochs=100,
  baseline_decays=(30, 60, 90),
)
MINI_PAPER = dict(
  base=dict(
    model='R14x0.5',
    dataset='cifar10',
    data_dir=SHARED_TFDS,
    resize=16,
    crop=16,
    classes=(5, 6, 7),
    log_every=20,
    checkpoint_every=100,
    keep_checkpoints=1,
  ),
  b=16,
  phase_epochs=2,
  phase_decays=(1,),
  baseline_epochs=10,
  baseline_decays=(3, 6, 9),
)
LAMBDA = 0.001  # Prasad et al.'s λ


def paper_config(scale_name: str, dataset: str | None):
  scale = MINI_PAPER if scale_name == 'mini' else PAPER
  base = base_config()
  base.update(scale['base'])
  base.update(
    init='scratch',
    preprocess='none',
    lr_schedule='step',
    decay_factor=0.1,
    warmup_steps=0,
    mixup_alpha=0.0,
    weight_decay=1e-4,
    momentum=0.9,
    eval_every=0,
  )
  if dataset:
    base.dataset = dataset
  b, lrs = scale['b'], stepwise.learning_rates(LAMBDA, scale['b'], MULTIPLES)
  phases = tuple(
    dict(
      name=name,
      fraction=fraction,
      batch_size=multiple * b,
      lr=lr,
      epochs=float(scale['phase_epochs']),
      decay_epochs=tuple(float(e) for e in scale['phase_decays']),
    )
    for name, fraction, multiple, lr in zip(NAMES, FRACTIONS, MULTIPLES, lrs)
  )
  baseline = dict(
    name='baseline',
    batch_size=b,
    lr=lrs[0],
    epochs=float(scale['baseline_epochs']),
    decay_epochs=tuple(float(e) for e in scale['baseline_decays']),
  )
  runs = (dict(name='stepwise', phases=phases), baseline)
  return study_config(base, runs, _report('paper' + (',mini' if scale_name == 'mini' else '')))


def _report(arg: str) -> dict:
  return dict(
    x='examples_seen',
    y='top1',
    series='name',
    points='evals',
    compare=(dict(column='name', a='stepwise', b='baseline', y=('top1', 'top5', 'examples_seen')),),
    xlabel='examples processed (stepwise: A, B, C, D, then O)',
    runs=('stepwise', 'baseline'),
    title=f'Stepwise growth A..O vs. one run on O ({arg})',
  )


def get_config(arg='full'):
  protocol, scale_name, dataset = study_args(arg)
  if protocol == 'paper':
    return paper_config(scale_name, dataset)
  scale, base = study_scale(SCALES, scale_name, dataset=dataset)
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
  return study_config(base, runs, _report(arg))
