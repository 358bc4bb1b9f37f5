"""The HTTP reward protocol on loopback: a live server, a flaky one, a slow one, none at all, and a
``rtdmd reward-server`` process that dies in the middle of a request."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from rtdmd.errors import UserError
from rtdmd.rewards import remote, server, wire
from rtdmd.rewards.compositional import CompositionalReward
from tests.rewards import toys
from tests.rewards.test_compositional import COUNTING, POSITION

pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parents[2]


class Serving:
    """A reward server in a background thread of this process."""

    def __init__(self, reward, kind="toy"):
        self.server = server.make_server(reward, name="toy", kind=kind, config={"a": 1}, port=0, quiet=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve():
    started = []

    def start(reward, kind="toy"):
        started.append(Serving(reward, kind))
        return started[-1].url

    yield start
    for s in started:
        s.close()


def test_live_server_scores_like_the_reward_itself(serve):
    url = serve(toys.Brightness())
    images = torch.rand(5, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    prompts = ["a", "bb", "ccc", "dddd", "eeeee"]
    direct = toys.Brightness()(images, prompts)
    exact = remote.RemoteReward(url, encoding="f32", batch_size=2)
    torch.testing.assert_close(exact(images, prompts), direct, atol=0, rtol=0)
    png = remote.RemoteReward(url)  # 8-bit PNG: what the server sees is the quantised image
    quantised = (images * 255).round() / 255
    torch.testing.assert_close(png(images, prompts), toys.Brightness()(quantised, prompts), atol=1e-6, rtol=0)
    info = exact.info()
    assert info["protocol"] == wire.PROTOCOL and info["name"] == "toy" and info["differentiable"] is False
    assert info["config"] == {"a": 1} and info["encodings"] == ["png", "f32"] and not exact.differentiable


def test_metadata_travels_with_the_images(serve):
    url = serve(CompositionalReward(toys.SquareOracle()), kind="compositional")
    images = torch.stack([toys.draw(32, [("dog", 2, 10, 6), ("cat", 20, 10, 6)]),
                          toys.draw(32, [("cat", 1, 1, 5)])])
    client = remote.build_remote(remote.RemoteConfig(url=url))
    torch.testing.assert_close(client(images, ["x", "y"], [POSITION, COUNTING]), torch.tensor([1.0, 0.0]))


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/score", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_malformed_requests_get_400_with_a_reason(serve):
    url = serve(toys.Brightness())
    good = {"protocol": 1, "prompts": ["a"], "metadata": None,
            "images": wire.encode_images(torch.zeros(1, 3, 4, 4), "f32")}
    assert post(url, json.dumps(good).encode())[0] == 200
    cases = [(b"not json", "not JSON"), (json.dumps({**good, "protocol": 2}).encode(), "protocol"),
             (json.dumps({**good, "prompts": ["a", "b"]}).encode(), "list of 1 strings"),
             (json.dumps({**good, "images": {**good["images"], "shape": [1, 3, 4, 5]}}).encode(), "bytes"),
             (json.dumps({**good, "images": {"encoding": "png", "data": ["AAAA"]}}).encode(), "bad images")]
    for body, reason in cases:
        status, answer = post(url, body)
        assert status == 400 and reason in answer["error"]


def test_reward_failure_is_reported_not_retried(serve):
    calls = []

    def broken(images, prompts, metadata=None):
        calls.append(1)
        raise RuntimeError("CUDA out of memory")

    broken.differentiable = False
    url = serve(broken)
    with pytest.raises(UserError, match="HTTP 500.*CUDA out of memory"):
        remote.RemoteReward(url, retries=3, backoff=0)(torch.zeros(1, 3, 4, 4), ["a"])
    assert len(calls) == 1


def test_flaky_server_is_retried_with_backoff():
    answers = [503, 502, 200]

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0)
            body = json.dumps({"scores": [0.5]} if status == 200 else {"error": "warming up"}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = remote.RemoteReward("http://127.0.0.1:%d" % server.server_address[1], retries=2, backoff=0.05)
        start = time.monotonic()
        assert client(torch.zeros(1, 3, 2, 2), ["a"]).tolist() == [0.5]
        assert time.monotonic() - start >= 0.05 + 0.1  # backoff 0.05 then 0.1
    finally:
        server.shutdown()
        server.server_close()


def test_timeout_then_clear_error(serve):
    url = serve(toys.Slow(delay=1.0))
    client = remote.RemoteReward(url, timeout=0.2, retries=1, backoff=0)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"after 2 attempts \(no answer within 0.2 s\)"):
        client(torch.zeros(1, 3, 2, 2), ["a"])
    assert time.monotonic() - start < 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_a_one_line_user_error():
    url = "http://127.0.0.1:%d" % free_port()
    with pytest.raises(UserError) as err:
        remote.build_remote(remote.RemoteConfig(url=url, retries=2, backoff=0.01))
    message = str(err.value)
    assert "\n" not in message and "after 3 attempts" in message and "cannot connect" in message
    assert "rtdmd reward-server --reward KIND" in message


def test_cli_server_dies_mid_request():
    """``rtdmd reward-server`` with a detector that kills its process while scoring: the client's first attempt
    loses the connection mid-request, the retries find nobody listening, then a clear error."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    process = subprocess.Popen(
        [sys.executable, "-m", "rtdmd.cli", "reward-server", "--reward", "compositional", "--set",
         "detector=tests.rewards.toys:build_dying", "--port", "0", "--device", "cpu", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    watchdog = threading.Timer(120, process.kill)  # never hang the suite on a server that does not start
    watchdog.start()
    try:
        line = process.stdout.readline()  # blocks until the server listens (or the process fails)
        assert "serving reward 'compositional' on http://" in line, process.stderr.read()
        url = line.split(" on ")[1].split()[0]
        client = remote.RemoteReward(url, timeout=30, retries=2, backoff=0.05)
        assert client.info()["kind"] == "compositional"
        with pytest.raises(UserError) as err:
            client(torch.zeros(1, 3, 8, 8), ["two cats"], [COUNTING])
        message = str(err.value)
        assert "after 3 attempts (connection lost mid-request" in message and "; then cannot connect" in message
        assert process.wait(timeout=30) == 3
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def test_cli_rejects_unknown_keys_in_one_line():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "rtdmd.cli", "reward-server", "--reward", "remote", "--set",
                             "ulr=http://x", "--port", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "rtdmd: error: unknown config key 'reward.ulr' (did you mean 'reward.url'?)"
