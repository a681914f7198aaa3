"""BiT-HyperRule against the official google-research/big_transfer `bit_hyperrule.py`.

Oracle: the official code's values, written out by hand below (schedule supports,
MixUp alpha, resolution and the learning rate around every support, with the
strict ``boundary < step`` decay test). None of the expected numbers is computed
with the module under test.
"""

import numpy as np
import pytest
from conftest import SHARED_TFDS

from bit_jax.recipe import hyperrule

TFDS_DIR = SHARED_TFDS  # BIT_JAX_TEST_DATA, else ../shared/data/tfds

SMALL = [100, 200, 300, 400, 500]
MEDIUM = [500, 3000, 6000, 9000, 10_000]
LARGE = [500, 6000, 12_000, 18_000, 20_000]

# num_examples, official supports, mixup alpha, typical image (h, w), (resize, crop)
OFFICIAL_TABLE = [
  (1_000, SMALL, 0.0, (32, 32), (160, 128)),
  (19_999, SMALL, 0.0, (224, 224), (512, 480)),
  (20_000, MEDIUM, 0.1, (32, 32), (160, 128)),
  (50_000, MEDIUM, 0.1, (32, 32), (160, 128)),
  (499_999, MEDIUM, 0.1, (500, 375), (512, 480)),
  (500_000, LARGE, 0.1, (224, 224), (512, 480)),
  (1_281_167, LARGE, 0.1, (224, 224), (512, 480)),
]


@pytest.mark.parametrize('num_examples, supports, alpha, image_hw, res', OFFICIAL_TABLE)
def test_official_table(num_examples, supports, alpha, image_hw, res):
  plan = hyperrule.schedule(num_examples)
  assert [plan.warmup_steps, *plan.decay_boundaries, plan.total_steps] == supports
  assert hyperrule.mixup_alpha(num_examples) == alpha
  assert hyperrule.resolution(image_hw) == res


# (step, lr) around every support with base lr 0.003. At and after the last support
# the official code returns None (stop); this module documents 0.0 instead.
SMALL_LRS = [
  (0, 0.0),
  (1, 0.00003),
  (50, 0.0015),
  (99, 0.00297),
  (100, 0.003),
  (101, 0.003),
  (199, 0.003),
  (200, 0.003),
  (201, 0.0003),
  (299, 0.0003),
  (300, 0.0003),
  (301, 3e-5),
  (399, 3e-5),
  (400, 3e-5),
  (401, 3e-6),
  (499, 3e-6),
  (500, 0.0),
  (501, 0.0),
]
MEDIUM_LRS = [
  (0, 0.0),
  (1, 0.000006),
  (499, 0.002994),
  (500, 0.003),
  (501, 0.003),
  (2999, 0.003),
  (3000, 0.003),
  (3001, 0.0003),
  (5999, 0.0003),
  (6000, 0.0003),
  (6001, 3e-5),
  (8999, 3e-5),
  (9000, 3e-5),
  (9001, 3e-6),
  (9999, 3e-6),
  (10_000, 0.0),
  (10_001, 0.0),
]
LARGE_LRS = [
  (0, 0.0),
  (1, 0.000006),
  (499, 0.002994),
  (500, 0.003),
  (501, 0.003),
  (5999, 0.003),
  (6000, 0.003),
  (6001, 0.0003),
  (11_999, 0.0003),
  (12_000, 0.0003),
  (12_001, 3e-5),
  (17_999, 3e-5),
  (18_000, 3e-5),
  (18_001, 3e-6),
  (19_999, 3e-6),
  (20_000, 0.0),
  (20_001, 0.0),
]
LR_CASES = (
  [(1_000, step, lr) for step, lr in SMALL_LRS]
  + [(50_000, step, lr) for step, lr in MEDIUM_LRS]
  + [(1_281_167, step, lr) for step, lr in LARGE_LRS]
)


@pytest.mark.parametrize('num_examples, step, expected', LR_CASES)
def test_learning_rate_matches_official(num_examples, step, expected):
  lr = hyperrule.schedule(num_examples).learning_rate(step, 0.003)
  assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_explicit_schedule_overrides_dataset_size():
  plan = hyperrule.Schedule(warmup_steps=10, decay_boundaries=(20,), total_steps=30)
  expected = {0: 0.0, 5: 0.005, 10: 0.01, 20: 0.01, 21: 0.001, 29: 0.001, 30: 0.0}
  for step, lr in expected.items():
    assert plan.learning_rate(step, 0.01) == pytest.approx(lr)


def test_no_warmup_schedule_starts_at_base_lr():
  plan = hyperrule.Schedule(warmup_steps=0, decay_boundaries=(), total_steps=5)
  assert plan.learning_rate(0, 0.1) == 0.1
  assert plan.learning_rate(5, 0.1) == 0.0


@pytest.mark.parametrize(
  'warmup, boundaries, total',
  [(-1, (), 10), (5, (3,), 10), (1, (8, 4), 10), (1, (12,), 10), (0, (), 0)],
)
def test_invalid_schedule_is_rejected(warmup, boundaries, total):
  with pytest.raises(ValueError, match='warmup_steps'):
    hyperrule.Schedule(warmup, boundaries, total)


def test_linear_scaling_is_there_when_asked_for():
  assert hyperrule.linearly_scaled_lr(512, 0.003, 512) == pytest.approx(0.003)
  assert hyperrule.linearly_scaled_lr(128, 0.003, 512) == pytest.approx(0.00075)
  assert hyperrule.linearly_scaled_lr(4096, 0.03, 256) == pytest.approx(0.48)
  with pytest.raises(ValueError, match='positive'):
    hyperrule.linearly_scaled_lr(0, 0.003, 512)


def test_resolution_area_boundary_is_strict():
  assert hyperrule.resolution((95, 95)) == (160, 128)
  assert hyperrule.resolution((96, 96)) == (512, 480)
  # Area decides, not the sides: 64 x 143 = 9152 < 9216, 64 x 144 = 9216.
  assert hyperrule.resolution((64, 143)) == (160, 128)
  assert hyperrule.resolution((64, 144)) == (512, 480)


def test_image_size_reads_tfds_metadata():
  if not TFDS_DIR.is_dir():
    pytest.skip(f'no TFDS data at {TFDS_DIR}')
  assert hyperrule.image_size('cifar10', data_dir=str(TFDS_DIR)) == (32, 32)
  # mnist is not in the official table, so (28, 28) can only come from metadata.
  assert hyperrule.image_size('mnist', data_dir=str(TFDS_DIR)) == (28, 28)


def test_image_size_falls_back_to_official_table_then_none():
  # TFDS declares pets as (None, None, 3): the official table supplies 224 x 224.
  assert hyperrule.image_size('oxford_iiit_pet') == (224, 224)
  assert hyperrule.image_size('oxford_flowers102') == (224, 224)
  assert hyperrule.image_size('no_such_dataset_anywhere') is None


def test_image_size_from_examples_takes_median():
  images = [np.zeros((32, 32, 3))] * 4 + [np.zeros((500, 300, 3))]
  assert hyperrule.image_size_from_examples(images) == (32, 32)
  assert hyperrule.image_size_from_examples(iter(images), max_examples=1) == (32, 32)
  assert hyperrule.image_size_from_examples([np.zeros((10, 20)), np.zeros((30, 40))]) == (20, 30)
  with pytest.raises(ValueError, match='empty'):
    hyperrule.image_size_from_examples([])


def test_the_regime_says_which_schedule_and_why():
  assert hyperrule.regime(5_085) == (
    '5,085 examples < 20k: 500 steps (warmup 100, /10 after 200, 300, 400), no MixUp'
  )
  assert hyperrule.regime(50_000) == (
    '50,000 examples in [20k, 500k): 10,000 steps (warmup 500, /10 after 3,000, 6,000, 9,000), '
    'MixUp alpha 0.1'
  )
  assert hyperrule.regime(1_281_167).startswith('1,281,167 examples >= 500k: 20,000 steps')
  assert hyperrule.resolution_regime((8, 8)) == '8x8 images (area < 96x96): 160->128'
  assert hyperrule.resolution_regime((224, 224)) == '224x224 images (area >= 96x96): 512->480'


def test_dry_run_shows_the_whole_schedule_and_the_regime():
  from test_train import tiny_config

  from bit_jax import train
  from bit_jax.recipe import plan

  lines = train.schedule_lines(plan.resolve(tiny_config(total_steps=12))).splitlines()
  # 12 of the rule's 500 steps: warmup round(100 * 12/500) = 2, decays round(4.8, 7.2, 9.6).
  assert lines[0] == (
    'phase0: lr 0.05 (hyperrule): warmup 2 steps from 0, /10 after steps 5, 7, 10; 12 steps of '
    '16 in all'
  )
  assert lines[1].split('HyperRule: ')[1] == (
    '438 examples < 20k: 500 steps (warmup 100, /10 after 200, 300, 400), no MixUp; '
    'total_steps 12 from the config; warmup and decays scaled by 12/500'
  )
