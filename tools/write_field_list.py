"""Rewrites README.md's field list ("Config fields") from the schema, bit_jax/recipe/settings.py.

    python tools/write_field_list.py

tests/test_settings.py fails while README's list and the schema differ.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bit_jax.recipe import settings  # noqa: E402

START, END = '<!-- fields: written by tools/write_field_list.py -->', '<!-- /fields -->'


def with_field_list(readme: str) -> str:
  before, start, rest = readme.partition(START)
  _, end, after = rest.partition(END)
  if not start or not end:
    raise SystemExit(f'README.md has no {START} ... {END} block to rewrite.')
  return f'{before}{START}\n\n{settings.markdown()}\n{END}{after}'


if __name__ == '__main__':
  path = Path(__file__).resolve().parents[1] / 'README.md'
  path.write_text(with_field_list(path.read_text()))
