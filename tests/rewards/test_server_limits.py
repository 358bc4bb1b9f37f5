"""The reward server under abuse (issue 14), on loopback with real sockets: a body over the size limit gets 413
(and is never held in memory), a request without a length 411, a stalled connection is closed after the
socket timeout, connections beyond the bound get 503 at once, and a client that hangs up leaves one log line,
never a traceback. Waits are bounded by socket timeouts; nothing asserts a duration."""

import json
import socket
import struct
import threading

import pytest
import torch

from rtdmd.errors import UserError
from rtdmd.rewards import remote, server, wire
from tests.rewards import toys

pytestmark = pytest.mark.multiprocess


class Recording:
    """A reward that counts its calls (and can be made to wait for a test's signal)."""

    differentiable = False

    def __init__(self):
        self.calls, self.release = 0, threading.Event()
        self.release.set()

    def __call__(self, images, prompts, metadata=None):
        self.calls += 1
        self.release.wait(timeout=30)
        return images.mean(dim=(1, 2, 3))


@pytest.fixture
def serve(capsys):
    started = []

    def start(reward=None, **limits):
        srv = server.make_server(reward or toys.Brightness(), name="toy", kind="toy", port=0, quiet=False, **limits)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        started.append((srv, thread))
        return srv, srv.server_address[1]

    yield start
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
    assert "Traceback" not in capsys.readouterr().err  # the server logged no traceback, whatever happened


def body(n=1, side=4):
    images = wire.encode_images(torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0)), "f32")
    return json.dumps({"protocol": 1, "prompts": ["a"] * n, "metadata": None, "images": images}).encode()


def exchange(port, raw: bytes, timeout=10.0) -> bytes:
    """Send ``raw`` on a fresh connection and read until the server closes it (or its answer is complete)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        return read_answer(conn)


def read_answer(conn) -> bytes:
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) >= length:
                return data
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk


def status_and_error(answer: bytes):
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest).get("error")


def post_head(length, extra=b""):
    return (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
            + (b"Content-Length: %d\r\n" % length if length is not None else b"") + b"\r\n")


def test_a_body_over_the_limit_gets_413_and_is_never_read_into_memory(serve, monkeypatch):
    reward = Recording()
    srv, port = serve(reward, max_body=1000)
    reads = []
    original = server._Handler._body

    def spy(handler):
        data = original(handler)
        reads.append(len(data))
        return data

    monkeypatch.setattr(server._Handler, "_body", spy)
    big = body(n=8, side=16)  # ~33 kB of JSON
    status, error = status_and_error(exchange(port, post_head(len(big)) + big))
    assert status == 413 and f"request body of {len(big)} bytes exceeds the server's limit of 1000 bytes" in error
    assert "batch_size" in error and reads == [] and reward.calls == 0
    status, _ = status_and_error(exchange(port, post_head(len(body())) + body()))  # still serving
    assert status == 200 and reward.calls == 1


def test_the_client_reports_413_in_one_line(serve):
    _, port = serve(max_body=1000)
    client = remote.RemoteReward(f"http://127.0.0.1:{port}", retries=0, encoding="f32")
    with pytest.raises(UserError) as err:
        client(torch.rand(8, 3, 16, 16), ["a"] * 8)
    message = str(err.value)
    assert "\n" not in message and "(HTTP 413)" in message and "exceeds the server's limit of 1000 bytes" in message
    assert remote.RemoteReward(f"http://127.0.0.1:{port}", batch_size=1, encoding="f32")(
        torch.rand(2, 3, 4, 4), ["a", "b"]).shape == (2,)  # the fix the message names


def test_a_request_without_length_gets_411(serve):
    _, port = serve()
    status, error = status_and_error(exchange(port, post_head(None)))
    assert status == 411 and "Content-Length" in error


def test_a_stalled_connection_is_closed_after_the_timeout(serve, capsys):
    _, port = serve(timeout=0.3)
    for partial in (b"", post_head(len(body())) + body()[:10]):  # nothing at all; half a body
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(partial)
            assert conn.recv(1024) == b""  # the server closed the connection (the client's own timeout is 30 s)
    srv_log = capsys.readouterr().err
    assert srv_log.count("Request timed out") == 2 and len(srv_log.splitlines()) == 2 and "Traceback" not in srv_log


def test_connections_beyond_the_bound_get_503_at_once(serve):
    reward = Recording()
    _, port = serve(reward, max_connections=2)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for conn in idle:  # make sure both are being served (each holds a slot) before the third comes
            conn.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(conn).startswith(b"HTTP/1.1 200")
        status, error = status_and_error(exchange(port, post_head(len(body())) + body()))
        assert status == 503 and "busy" in error and reward.calls == 0
    finally:
        for conn in idle:
            conn.close()
    client = remote.RemoteReward(f"http://127.0.0.1:{port}", retries=5, backoff=0.05)  # 503 is retried
    assert client(torch.rand(1, 3, 4, 4), ["a"]).shape == (1,)


def test_client_hang_ups_leave_one_line_not_a_traceback(serve, capsys):
    reward = Recording()
    _, port = serve(reward)
    full = body(n=4, side=64)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:  # hangs up mid-body
        conn.sendall(post_head(len(full)) + full[:100])
    reward.release.clear()
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)  # hangs up while its request is scored
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    conn.sendall(post_head(len(full)) + full)
    for _ in range(3000):  # until the reward is called (bounded: a broken server fails the assertion below)
        if reward.calls:
            break
        threading.Event().wait(0.01)
    assert reward.calls == 1
    conn.close()
    reward.release.set()
    status, _ = status_and_error(exchange(port, post_head(len(body())) + body()))  # still serving
    assert status == 200
    log = ""
    for _ in range(1000):  # the handlers log on their own threads: wait (bounded) for both lines
        log += capsys.readouterr().err
        if log.count("connection dropped (") >= 2:
            break
        threading.Event().wait(0.01)
    dropped = [line for line in log.splitlines() if "connection dropped (" in line]
    assert "Traceback" not in log and len(dropped) == 2, log
