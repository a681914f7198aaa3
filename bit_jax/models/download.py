"""Downloads a person can watch and trust: a progress bar, resume after a cut connection, and a
size and MD5 check before the file appears under its final name.

    fetch('https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz', 'BiT-M-R50x1.npz')

Bytes arrive in `<target>.part`. A cut connection keeps them and the next call asks only for
the rest (an HTTP `Range` request), so a 4 GB checkpoint over a flaky link still finishes.
`target` itself only ever holds a whole file whose size matches the server's and whose MD5
matches Google Cloud Storage's `x-goog-hash` (sent for every BiT checkpoint) or the caller's;
a file that no MD5 vouches for is opened by the caller's `verify` before it is kept. Two
processes that fetch one target at once: the second waits for the first (`<target>.lock`).
"""

import base64
import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from bit_jax.runtime import progress

CHUNK = 1 << 20


def fetch(
  url: str,
  target,
  *,
  expected_size: int | None = None,
  md5: str | None = None,
  quiet: bool = False,
  verify: Callable[[Path], object] | None = None,
) -> Path:
  """Download `url` to `target` (resuming `<target>.part` if there is one) and return it.

  `md5` is a hex digest. `verify(path)` opens a file that no MD5 confirms (the server sent
  none and the caller gave none) before it is kept; it raises if the file is not what was
  wanted. One process downloads a target at a time; another that asks for it meanwhile
  waits for that download and returns its file. Raises RuntimeError: for an HTTP error
  (nothing left behind), a size or MD5 mismatch or a file `verify` refuses (the part file
  deleted), or a cut connection (the part file kept).
  """
  target = Path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  with _alone(target, quiet) as waited:
    if waited and target.exists():
      return target
    return _fetch(url, target, expected_size, md5, quiet, verify)


@contextlib.contextmanager
def _alone(target: Path, quiet: bool) -> Iterator[bool]:
  """Hold the download lock of `target` (`<target>.lock`, removed after; the kernel drops an
  flock when its process dies, so a killed download never blocks the next). Yields whether
  another download had to be waited for."""
  path = target.with_name(target.name + '.lock')
  waited = False
  while True:
    guard = open(path, 'a')  # noqa: SIM115  (held until the download ends)
    try:
      fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not (waited or quiet):
        print(f'Waiting for another download of {target}...', file=sys.stderr, flush=True)
      waited = True
      fcntl.flock(guard, fcntl.LOCK_EX)
    try:  # the file locked is still the one at `path` (its holder did not just remove it)
      if os.fstat(guard.fileno()).st_ino == os.stat(path).st_ino:
        break
    except FileNotFoundError:
      pass
    guard.close()
  try:
    yield waited
  finally:
    path.unlink(missing_ok=True)
    guard.close()


def _fetch(url, target: Path, expected_size, md5, quiet, verify) -> Path:
  """`fetch` itself, its download lock held."""
  part = target.with_name(target.name + '.part')
  kept = part.stat().st_size if part.exists() else 0
  again = lambda: _fetch(url, target, expected_size, md5, quiet, verify)
  request = urllib.request.Request(url, headers={'Range': f'bytes={kept}-'} if kept else {})
  try:
    response = urllib.request.urlopen(request, timeout=60)
  except urllib.error.HTTPError as e:
    if e.code == 416 and kept:  # nothing left after byte `kept`: whole, or a stale leftover
      whole = _content_range(e.headers)[1] or expected_size
      if whole == kept:
        return _finish(
          url, part, target, (whole, expected_size, md5 or _goog_md5(e.headers)), verify
        )
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
    _receive(url, response, part, target, (kept, total), quiet)
    md5 = md5 or _goog_md5(response.headers)
    return _finish(url, part, target, (total, expected_size, md5), verify)


def _receive(url, response, part: Path, target: Path, span, quiet: bool) -> None:
  """The response's body appended to `part` (from byte `kept` of `total`), with a bar."""
  kept, total = span
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


def _finish(url, part, target, known, verify) -> Path:
  """Check the part file against every size and MD5 `known` (the server's size, the
  caller's, an MD5) and, with no MD5, open it with `verify`; then give it its final name."""
  total, expected_size, md5 = known
  size = part.stat().st_size
  problems = [
    f'{size} bytes where {what} says {want}'
    for what, want in (('the server', total), ('the caller', expected_size))
    if want is not None and size != want
  ]
  if md5 and not problems and (found := _md5_of(part)) != md5.lower():
    problems.append(f'MD5 {found} where {md5.lower()} was expected')
  if not md5 and not problems and verify is not None:
    try:  # a size the server may have got wrong is all that vouches for it
      verify(part)
    except Exception as e:  # noqa: BLE001  (whatever the reader raises, the file is no good)
      problems.append(f'no checksum was sent, and it does not open ({type(e).__name__}: {e})')
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
