"""The package's architecture, checked from its source: imports run only downward through the
layers (README.md, "Layout"), without cycles; no function is longer than 60 lines; no module
keeps mutable state at module level."""

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'bit_jax'
# Lowest first: a module may import its own layer and those below, never one above. The
# package's top level (the commands, `python -m bit_jax.<command>`, and `bit_jax/__init__`) is
# above every layer; nothing in a layer imports it.
LAYERS = ('runtime', 'models', 'data', 'recipe', 'training', 'serving', 'studies')
TOP = len(LAYERS)
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


@functools.cache
def modules() -> dict[str, ast.Module]:
  return {_module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob('*.py'))}


def layer(module: str) -> int:
  parts = module.split('.')
  return LAYERS.index(parts[1]) if len(parts) > 2 or parts[1:2] and parts[1] in LAYERS else TOP


def imports(tree: ast.Module, known: set[str]) -> set[str]:
  """The bit_jax modules a module imports (`from bit_jax.x import name` names x.name if that
  is a module, else x)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith('bit_jax.')}
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('bit_jax'):
      for alias in node.names:
        candidate = f'{node.module}.{alias.name}'
        found.add(candidate if candidate in known else node.module)
  return found - {'bit_jax'}


def graph() -> dict[str, set[str]]:
  known = set(modules())
  return {name: imports(tree, known) & known for name, tree in modules().items()}


def test_every_module_is_in_a_layer_or_at_the_top():
  for name in modules():
    parts = name.split('.')
    assert len(parts) <= 2 or parts[1] in LAYERS, f'{name}: not in a layer of {LAYERS}'


def test_imports_only_run_downward():
  upward = [
    f'{a} (layer {layer(a)}) imports {b} (layer {layer(b)})'
    for a, targets in graph().items()
    for b in targets
    if layer(b) > layer(a)
  ]
  assert not upward, upward


def test_no_import_cycle():
  edges, state, cycles = graph(), {}, []

  def visit(node, path):
    state[node] = 'open'
    for target in sorted(edges[node]):
      if state.get(target) == 'open':
        cycles.append(' -> '.join([*path[path.index(target) :], target]))
      elif target not in state:
        visit(target, [*path, target])
    state[node] = 'done'

  for node in sorted(edges):
    if node not in state:
      visit(node, [node])
  assert not cycles, cycles


def test_the_checks_catch_what_they_look_for():
  fake = ast.parse('from bit_jax.training import loop\nfrom bit_jax import train\n')
  known = {'bit_jax.training.loop', 'bit_jax.train'}
  assert imports(fake, known) == known
  assert layer('bit_jax.training.loop') > layer('bit_jax.models.ops')
  assert layer('bit_jax.train') == TOP > layer('bit_jax.studies.stats')
  assert _long_functions(ast.parse('def f():\n' + '  x = 1\n' * 61)) == ['f: 62 lines']
  assert _mutable_module_state(ast.parse('cache = {}\nNAMES = [1]\nNAMES.append(2)\n')) == [
    'cache = (a mutable container)',
    'NAMES is mutated',
  ]


def _long_functions(tree: ast.Module) -> list[str]:
  return [
    f'{node.name}: {node.end_lineno - node.lineno + 1} lines'
    for node in ast.walk(tree)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
  ]


@pytest.mark.parametrize('name', sorted(modules()))
def test_no_function_longer_than_60_lines(name):
  assert not _long_functions(modules()[name])


MUTABLE = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
MUTATORS = {'append', 'extend', 'insert', 'update', 'add', 'pop', 'clear', 'setdefault', 'remove'}


def _mutable_module_state(tree: ast.Module) -> list[str]:
  """Module-level names bound to a mutable container that are not constants (UPPER_CASE), and
  constants that something mutates; `global` anywhere."""
  found, constants = [], set()
  for node in tree.body:
    targets = node.targets if isinstance(node, ast.Assign) else []
    if isinstance(node, ast.AnnAssign):
      targets = [node.target]
    for target in targets:
      if isinstance(target, ast.Name) and isinstance(node.value, MUTABLE):
        if target.id.isupper() or target.id.lstrip('_').isupper():
          constants.add(target.id)
        elif target.id != '__all__':
          found.append(f'{target.id} = (a mutable container)')
  for node in ast.walk(tree):
    if isinstance(node, ast.Global):
      found.append(f'global {", ".join(node.names)}')
    subject = None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      if node.func.attr in MUTATORS:
        subject = node.func.value
    elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
      for target in getattr(node, 'targets', None) or [getattr(node, 'target', None)]:
        if isinstance(target, ast.Subscript):
          subject = target.value
    if isinstance(subject, ast.Name) and subject.id in constants:
      found.append(f'{subject.id} is mutated')
  return found


@pytest.mark.parametrize('name', sorted(modules()))
def test_no_module_level_mutable_state(name):
  assert not _mutable_module_state(modules()[name])
