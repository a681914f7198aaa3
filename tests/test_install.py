"""The install as README writes it: configs inside the package, the test data settable.

Oracles: the files on disk (every config a wheel must carry) and the error a user sees.
"""

import os
import subprocess
import sys
import tomllib

import in_process
from conftest import REPO

from bit_jax import train


def test_every_config_ships_inside_the_package():
  setuptools = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['setuptools']
  assert setuptools['package-dir'] == {'bit_jax.configs': 'configs'}
  folders = {p.parent.relative_to(REPO) for p in (REPO / 'configs').rglob('*.py')}
  wanted = {'bit_jax.' + '.'.join(folder.parts) for folder in folders}
  assert wanted <= set(setuptools['packages']), wanted - set(setuptools['packages'])


def test_no_config_and_no_demo_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(train, 'DEMO_CONFIG', '/nonexistent/configs/demo.py')  # a wheel without
  done = in_process.run('train', f'--workdir={tmp_path}')  # its configs, and no --config
  assert done.returncode == 2, done.stderr[-2000:]
  assert 'ERROR: No --config given and the demo config is not installed' in done.stderr
  assert 'Pass --config=' in done.stderr and not (tmp_path / 'phases.json').exists()


def test_the_real_data_location_is_an_environment_variable(tmp_path):
  show = 'import conftest; print(conftest.SHARED_TFDS)'
  done = subprocess.run(
    [sys.executable, '-c', show],
    cwd=REPO / 'tests',
    capture_output=True,
    text=True,
    env={**os.environ, 'BIT_JAX_TEST_DATA': str(tmp_path)},
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == str(tmp_path)


def test_every_package_folder_ships_and_every_script_names_a_command():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())
  folders = {p.parent.relative_to(REPO) for p in (REPO / 'bit_jax').rglob('__init__.py')}
  packages = set(project['tool']['setuptools']['packages'])
  assert {'.'.join(folder.parts) for folder in folders} <= packages
  scripts = project['project']['scripts']
  commands = {'train', 'sweep', 'predict', 'export', 'fewshot', 'report'}
  assert {name.removeprefix('bit-jax-') for name in scripts} == commands
  for name, target in scripts.items():  # each a function of the module `python -m` runs
    module, function = target.split(':')
    assert module == 'bit_jax.' + name.removeprefix('bit-jax-')
    source = (REPO / (module.replace('.', '/') + '.py')).read_text()
    assert f'\ndef {function}(' in source, target
