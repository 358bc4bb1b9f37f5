import http.server
import threading

import pytest

from rtdmd.data import benchmarks, fetch
from tests.shared_data import shared_dir


@pytest.fixture(autouse=True)
def _isolated_fetch(tmp_path, monkeypatch):
    """Every data test gets an empty cache, no mirror, and a download host that refuses connections (port 9 of
    the loopback), so that no test reads ~/.cache or reaches the internet unless it says so."""
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.setenv(fetch.URL_ENV, "http://127.0.0.1:9")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def datasets():
    return shared_dir() / "datasets"


@pytest.fixture
def mirror(monkeypatch, datasets):
    """Fetch through the shared folder instead of the network."""
    monkeypatch.setenv(fetch.MIRROR_ENV, str(datasets))
    return datasets


def cached_files(cache):
    """Every file under the cache folder (temporary ones included)."""
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


class Server(http.server.ThreadingHTTPServer):
    """Serves ``/<repo>/<commit>/<path>`` of every registered file from the shared folder, damaged as ``mode``
    says: ``ok``, ``truncate`` (announces the full length, sends half, closes), ``corrupt`` (one byte
    flipped), ``long`` (one byte appended), ``missing`` (404)."""

    def __init__(self, datasets):
        super().__init__(("127.0.0.1", 0), Handler)
        self.datasets = datasets
        self.mode = "ok"
        self.requests = 0
        self.routes = {f"/{f.repo}/{f.commit}/{f.path}": f.local for f in benchmarks.FILES.values()}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests += 1
        local = server.routes.get(self.path)
        if local is None or server.mode == "missing":
            self.send_error(404)
            return
        body = (server.datasets / local).read_bytes()
        length = len(body)
        if server.mode == "truncate":
            body = body[:length // 2]
        elif server.mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
        elif server.mode == "long":
            body = body + b"\n"
            length += 1
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(datasets, monkeypatch):
    """A loopback HTTP server in a thread, set as the download host."""
    srv = Server(datasets)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    monkeypatch.setenv(fetch.URL_ENV, f"http://127.0.0.1:{srv.server_address[1]}")
    yield srv
    srv.shutdown()
    srv.server_close()
