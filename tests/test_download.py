"""bit_jax.models.download against a local stand-in for storage.googleapis.com.

Oracles: the bytes of tests/data/bit_small_official.npz (what the server serves), the `Range`
headers the server saw, and timm's logits for that file (tests/data/golden_bit_small.npz).
"""

import base64
import hashlib
import http.server
import re
import threading
import time

import jax
import numpy as np
import pytest
import tqdm
from conftest import TEST_DATA

from bit_jax import models
from bit_jax.models import download, pretrained

CHECKPOINT = TEST_DATA / 'bit_small_official.npz'
GOLDEN = TEST_DATA / 'golden_bit_small.npz'
DATA = CHECKPOINT.read_bytes()
HALF = len(DATA) // 2
MD5 = hashlib.md5(DATA).digest()


class Server:
  """Serves DATA like Cloud Storage (`Range`, `x-goog-hash`) unless `mode` says misbehave:
  'cut' (announce the whole body, close after half), '404', 'bad_md5', 'no_range' (answer a
  `Range` request with the whole file), 'short' (no hash, a Content-Length 100 bytes short,
  and only that much sent). `delay`: seconds between ten pieces of the body."""

  def __init__(self):
    self.mode, self.ranges, self.sent, self.delay = 'ok', [], [], 0.0
    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(self))
    self.url = f'http://127.0.0.1:{self.httpd.server_port}/bit_small_official.npz'


def _handler(server):
  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
      server.ranges.append(self.headers.get('Range'))
      if server.mode == '404':
        return self.send_error(404)
      m = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
      start = int(m.group(1)) if m and server.mode != 'no_range' else None
      if start is not None and start >= len(DATA):
        self.send_response(416)
        self.send_header('Content-Range', f'bytes */{len(DATA)}')
        return self.end_headers()
      body = DATA[start or 0 :]
      body = body[:-100] if server.mode == 'short' else body
      self.send_response(200 if start is None else 206)
      if start is not None:
        self.send_header('Content-Range', f'bytes {start}-{len(DATA) - 1}/{len(DATA)}')
      self.send_header('Content-Length', str(len(body)))
      md5 = hashlib.md5(b'other bytes').digest() if server.mode == 'bad_md5' else MD5
      if server.mode != 'short':
        self.send_header('x-goog-hash', 'crc32c=n03x6A==')  # GCS sends two headers
        self.send_header('x-goog-hash', f'md5={base64.b64encode(md5).decode()}')
      self.end_headers()
      body = body[: len(body) // 2] if server.mode == 'cut' else body
      piece = -(-len(body) // 10)
      for i in range(0, len(body), piece):
        time.sleep(server.delay)
        self.wfile.write(body[i : i + piece])  # HTTP/1.0: the connection closes after
      server.sent.append(len(body))

    def log_message(self, *args):
      pass

  return Handler


@pytest.fixture
def server():
  s = Server()
  thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
  thread.start()
  yield s
  s.httpd.shutdown()
  s.httpd.server_close()


def leftovers(directory):
  return sorted(p.name for p in directory.iterdir())


def test_download_is_byte_identical_and_leaves_no_part(server, tmp_path):
  path = download.fetch(server.url, tmp_path / 'model.npz', quiet=True)
  assert path == tmp_path / 'model.npz' and path.read_bytes() == DATA
  assert leftovers(tmp_path) == ['model.npz'] and server.ranges == [None]


def test_cut_connection_keeps_part_and_next_call_resumes(server, tmp_path):
  target = tmp_path / 'model.npz'
  server.mode = 'cut'
  with pytest.raises(RuntimeError) as error:
    download.fetch(server.url, target, quiet=True)
  message = str(error.value)
  assert server.url in message and f'{HALF} bytes' in message and 'resume' in message
  assert 'put it at' in message and 'BIT_JAX_CACHE' in message
  assert leftovers(tmp_path) == ['model.npz.part']
  assert (tmp_path / 'model.npz.part').read_bytes() == DATA[:HALF]

  server.mode = 'ok'
  download.fetch(server.url, target, quiet=True)
  assert server.ranges[-1] == f'bytes={HALF}-'  # asked only for the rest ...
  assert server.sent[-1] == len(DATA) - HALF  # ... and got only the rest
  assert target.read_bytes() == DATA and leftovers(tmp_path) == ['model.npz']


def test_server_ignoring_range_starts_over(server, tmp_path):
  (tmp_path / 'model.npz.part').write_bytes(b'stale bytes that must not be kept')
  server.mode = 'no_range'
  download.fetch(server.url, tmp_path / 'model.npz', quiet=True)
  assert server.ranges == ['bytes=33-']
  assert (tmp_path / 'model.npz').read_bytes() == DATA and leftovers(tmp_path) == ['model.npz']


def test_complete_part_is_finished_after_416(server, tmp_path):
  (tmp_path / 'model.npz.part').write_bytes(DATA)
  download.fetch(server.url, tmp_path / 'model.npz', quiet=True)
  assert server.ranges == [f'bytes={len(DATA)}-'] and server.sent == []
  assert (tmp_path / 'model.npz').read_bytes() == DATA and leftovers(tmp_path) == ['model.npz']


def test_http_error_names_status_and_url_and_leaves_nothing(server, tmp_path):
  (tmp_path / 'model.npz.part').write_bytes(DATA[:100])  # from an earlier, cut attempt
  server.mode = '404'
  with pytest.raises(RuntimeError, match='HTTP 404') as error:
    download.fetch(server.url, tmp_path / 'model.npz', quiet=True)
  assert server.url in str(error.value)
  assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
  'mode,kwargs,problem',
  [
    ('bad_md5', {}, 'MD5'),  # the server's hash
    ('ok', {'md5': hashlib.md5(b'x').hexdigest()}, 'MD5'),  # the caller's hash
    ('ok', {'expected_size': len(DATA) + 1}, f'{len(DATA)} bytes'),  # the caller's size
  ],
)
def test_mismatch_deletes_the_file(server, tmp_path, mode, kwargs, problem):
  server.mode = mode
  with pytest.raises(RuntimeError, match='corrupt') as error:
    download.fetch(server.url, tmp_path / 'model.npz', quiet=True, **kwargs)
  assert problem in str(error.value)
  assert leftovers(tmp_path) == []


def test_progress_bar_shows_size_and_rate_unless_quiet(server, tmp_path, capsys):
  download.fetch(server.url, tmp_path / 'a.npz')
  err = capsys.readouterr().err
  size = tqdm.tqdm.format_sizeof(len(DATA), divisor=1024)
  assert server.url in err and f'{size}/{size}' in err and 'B/s' in err
  download.fetch(server.url, tmp_path / 'b.npz', quiet=True)
  assert capsys.readouterr().err == ''


def test_load_pretrained_of_a_published_name_downloads(server, tmp_path, monkeypatch):
  spec = dict(models.KNOWN_MODELS['BiT-S-R50x1'], url=server.url, filename='BiT-S-R50x1.npz')
  monkeypatch.setitem(models.KNOWN_MODELS, 'BiT-S-R50x1', spec)
  model, params = pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path)
  assert server.ranges == [None] and (tmp_path / 'BiT-S-R50x1.npz').read_bytes() == DATA
  golden = np.load(GOLDEN)
  logits = jax.jit(model.apply)({'params': params}, golden['images'])
  assert np.abs(np.asarray(logits) - golden['logits']).max() <= 1e-4
  pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path, num_classes=0)
  assert len(server.ranges) == 1  # the second load is cached


def test_a_file_no_checksum_vouches_for_is_opened_before_it_is_kept(server, tmp_path, monkeypatch):
  server.mode = 'short'  # a Content-Length that agrees with the short body: size alone passes
  spec = dict(models.KNOWN_MODELS['BiT-S-R50x1'], url=server.url, filename='BiT-S-R50x1.npz')
  monkeypatch.setitem(models.KNOWN_MODELS, 'BiT-S-R50x1', spec)
  with pytest.raises(RuntimeError, match='no checksum was sent, and it does not open') as error:
    pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path)
  assert 'deleted; rerun to download it again' in str(error.value)
  assert leftovers(tmp_path) == []
  server.mode = 'ok'
  pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path)  # fetched again, whole
  assert (tmp_path / 'BiT-S-R50x1.npz').read_bytes() == DATA


def test_an_unreadable_cached_checkpoint_is_named_with_the_fix(tmp_path):
  (tmp_path / 'BiT-S-R50x1.npz').write_bytes(DATA[:-100])  # e.g. put there by hand, cut
  with pytest.raises(ValueError) as error:
    pretrained.load_pretrained('BiT-S-R50x1', cache=tmp_path)
  message = str(error.value)
  assert 'It is the cached download of BiT-S-R50x1' in message
  assert f'delete {tmp_path / "BiT-S-R50x1.npz"} and rerun' in message


def test_one_downloader_per_target_the_other_waits_for_its_file(server, tmp_path):
  server.delay = 0.1  # a second long download: the two overlap
  target = tmp_path / 'model.npz'
  results, errors = [], []

  def get():
    try:
      results.append(download.fetch(server.url, target, quiet=True))
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  threads = [threading.Thread(target=get) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == [] and results == [target, target]
  assert server.ranges == [None]  # one request: the second waited for the first's file
  assert target.read_bytes() == DATA and leftovers(tmp_path) == ['model.npz']
