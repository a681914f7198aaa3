"""Downloads a person can watch and trust: a progress bar, resume after a cut connection, and a
size and MD5 check before the file appears under its final name.

    fetch('https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz', 'BiT-M-R50x1.npz')

Bytes arrive in `<target>.part`. A cut connection keeps them and the next call asks only for
the rest (an HTTP `Range` request), so a 4 GB checkpoint over a flaky link still finishes.
`target` itself only ever holds a whole file whose size matches the server's and whose MD5
matches Google Cloud Storage's `x-goog-hash` (sent for every BiT checkpoint) or the caller's.
"""

import base64
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bit_jax import progress

CHUNK = 1 << 20


def fetch(
  url: str, target, *, expected_size: int | None = None, md5: str | None = None, quiet: bool = False
) -> Path:
  """Download `url` to `target` (resuming `<target>.part` if there is one) and return it.

  `md5` is a hex digest. Raises RuntimeError: for an HTTP error (nothing left behind), a size
  or MD5 mismatch (the part file deleted), or a cut connection (the part file kept).
  """
  target = Path(target)
  part = target.with_name(target.name + '.part')
  target.parent.mkdir(parents=True, exist_ok=True)
  kept = part.stat().st_size if part.exists() else 0
  again = lambda: fetch(url, target, expected_size=expected_size, md5=md5, quiet=quiet)
  request = urllib.request.Request(url, headers={'Range': f'bytes={kept}-'} if kept else {})
  try:
    response = urllib.request.urlopen(request, timeout=60)
  except urllib.error.HTTPError as e:
    if e.code == 416 and kept:  # nothing left after byte `kept`: whole, or a stale leftover
      whole = _content_range(e.headers)[1] or expected_size
      if whole == kept:
        return _finish(url, part, target, whole, expected_size, md5 or _goog_md5(e.headers))
      part.unlink()
      return again()
    if e.code < 500:  # the object is gone or forbidden: bytes kept from it are no use
      part.unlink(missing_ok=True)
    advice = 'Check the URL.' if e.code < 500 else 'The server is in trouble; rerun later.'
    raise RuntimeError(
      f'Could not download {url}: the server answered HTTP {e.code} '
      f'({e.reason}). {advice} {_offline(target)}'
    ) from None
  except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
    raise RuntimeError(_cut(url, part, target, kept, e)) from e
  with response:
    start, total = _content_range(response.headers)
    if response.status == 206 and start != kept:  # not the bytes asked for
      part.unlink()
      return again()
    if response.status != 206:  # the whole object, from byte 0
      kept, total = 0, _int(response.headers.get('Content-Length'))
    if not quiet:
      print(
        f'Downloading {url} -> {target}' + (f' (resuming at byte {kept})' if kept else ''),
        file=sys.stderr,
        flush=True,
      )
    bar = progress.bar(
      total=total,
      initial=kept,
      unit='B',
      unit_scale=True,
      unit_divisor=1024,
      desc=target.name,
      quiet=quiet,
    )
    try:
      with bar, open(part, 'ab' if kept else 'wb') as f:
        while chunk := response.read(CHUNK):
          f.write(chunk)
          bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
      raise RuntimeError(_cut(url, part, target, part.stat().st_size, e)) from e
    size = part.stat().st_size
    if total is not None and size < total:  # http.client ends a short body without an error
      raise RuntimeError(
        _cut(url, part, target, size, f'connection closed at {size} of {total} bytes')
      )
    return _finish(url, part, target, total, expected_size, md5 or _goog_md5(response.headers))


def _finish(url, part, target, total, expected_size, md5) -> Path:
  """Check the part file against every size and MD5 known, then give it its final name."""
  size = part.stat().st_size
  problems = [
    f'{size} bytes where {what} says {want}'
    for what, want in (('the server', total), ('the caller', expected_size))
    if want is not None and size != want
  ]
  if md5 and not problems and (found := _md5_of(part)) != md5.lower():
    problems.append(f'MD5 {found} where {md5.lower()} was expected')
  if problems:
    part.unlink()
    raise RuntimeError(
      f'Download of {url} is corrupt: {"; ".join(problems)}. It was deleted; '
      f'rerun to download it again. {_offline(target)}'
    )
  os.replace(part, target)
  return target


def _cut(url, part, target, kept, error) -> str:
  if kept:
    progress = f'The {kept} bytes received are kept in {part}; rerun to resume from there.'
  else:
    part.unlink(missing_ok=True)
    progress = 'No bytes arrived; rerun when the network is back.'
  reason = error if isinstance(error, str) else f'{type(error).__name__}: {error}'
  return f'Download of {url} failed ({reason}). {progress} {_offline(target)}'


def _offline(target) -> str:
  return (
    f'Without network access, fetch the file elsewhere and put it at {target} (or, for '
    f'BiT checkpoints, set BIT_JAX_CACHE to the folder that holds it).'
  )


def _content_range(headers) -> tuple[int | None, int | None]:
  """(first byte, total size) from `Content-Range: bytes 100-199/200` or `bytes */200`."""
  m = re.fullmatch(r'bytes (?:(\d+)-\d+|\*)/(\d+|\*)', (headers or {}).get('Content-Range', ''))
  return (_int(m.group(1)), _int(m.group(2))) if m else (None, None)


def _int(value) -> int | None:
  return int(value) if value is not None and str(value).isdigit() else None


def _goog_md5(headers) -> str | None:
  """The hex MD5 in `x-goog-hash: crc32c=...,md5=<base64>`, if the server sent one."""
  for header in (headers.get_all('x-goog-hash') or []) if headers else []:
    for item in header.split(','):
      name, _, value = item.strip().partition('=')
      if name == 'md5':
        return base64.b64decode(value).hex()
  return None


def _md5_of(path) -> str:
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    while chunk := f.read(CHUNK):
      digest.update(chunk)
  return digest.hexdigest()
