"""The tables a sweep writes: CSV files and markdown, and the cells in them.

Numbers in CSV files keep 10 significant digits (a reader recomputes from them); tables for
reading round to 4. A table read back from a CSV file is strings, as a user's file would be;
`number` is how every reader turns a cell into a float (None where it holds none).
"""

import csv
import io
import re

from etils import epath

from bit_jax.runtime import files


def cell(value, digits: int = 4) -> str:
  if isinstance(value, float):
    return f'{value:.{digits}g}'
  return '' if value is None else str(value)


def number(text) -> float | None:
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


def typed(text):
  """A CSV cell as the sweep wrote it: None, an int, a float or the text itself."""
  if text in ('', None):
    return None
  if re.fullmatch(r'-?[0-9]+', text):
    return int(text)
  value = number(text)
  return text if value is None else value


def write_csv(path, rows, columns):
  text = io.StringIO(newline='')
  writer = csv.DictWriter(text, columns, extrasaction='ignore')
  writer.writeheader()
  writer.writerows({k: cell(row.get(k), 10) for k in columns} for row in rows)
  files.write_atomic(path, text.getvalue())


def read_csv(path) -> list[dict]:
  return list(csv.DictReader(io.StringIO(epath.Path(path).read_text(), newline='')))


def markdown_table(rows, columns, headers=None) -> str:
  lines = ['| ' + ' | '.join(headers or columns) + ' |', '|' + '---|' * len(columns)]
  lines += [
    '| ' + ' | '.join(cell(row.get(k)).replace('|', '\\|') for k in columns) + ' |' for row in rows
  ]
  return '\n'.join(lines)
