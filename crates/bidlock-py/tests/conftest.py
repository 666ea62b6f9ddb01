"""Fixtures: a real redis-server on a free loopback port (as the Rust testkit does), the
environment of each backend, the bidlock CLI binary, and a stub `place_bid`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

import bidlock
import bidlock._manager

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = 20.0, interval: float = 0.01):
    """Polls `predicate` until it returns a truthy value; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """One redis-server process, no persistence, on 127.0.0.1."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bidlock-py-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, socket_timeout=5)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            try:
                return self.client.ping()
            except redis.ConnectionError:
                return False

        wait_until(ready, "redis-server to answer PING")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on the PATH (scripts/test.sh installs it)")
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A redis-py client on a flushed database."""
    redis_server.client.flushdb()
    return redis_server.client


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No bidlock variable of the developer's shell leaks into a test."""
    for var in bidlock.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(autouse=True)
async def fresh_default_manager():
    """Each test starts without a process-wide manager (the environment differs per test)."""
    yield
    current = bidlock._manager._default
    if current is not None and not current.closed:
        await current.close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback Redis URL where nothing listens: connecting fails at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture(params=["memory", "redis"])
def backend(request, clean_env):
    """Configures the environment for one backend, as a deployment would."""
    if request.param == "memory":
        clean_env.setenv("USE_REDIS_LOCKS", "false")
    else:
        server = request.getfixturevalue("redis_server")
        server.client.flushdb()
        clean_env.setenv("REDIS_URL", server.url)
        clean_env.setenv("USE_REDIS_LOCKS", "true")
    return request.param


@pytest.fixture
def redis_env(redis_server, redis_client, clean_env):
    """The environment of a production instance: Redis required."""
    clean_env.setenv("REDIS_URL", redis_server.url)
    clean_env.setenv("USE_REDIS_LOCKS", "true")
    return redis_server


class Bids:
    """The stub `place_bid` of the guide's examples. It records each call together with
    the holder that the manager in the caller's scope (its variable `manager`) reports for
    the posting at that moment, so a test can check the bid ran under the lock."""

    def __init__(self) -> None:
        self.calls = []

    async def place_bid(self, posting_id, marketplace_id):
        manager = sys._getframe(1).f_locals["manager"]
        status = await manager.status(marketplace_id, posting_id)
        self.calls.append((posting_id, marketplace_id, status.holder))


@pytest.fixture
def bids() -> Bids:
    return Bids()


@pytest.fixture(scope="session")
def bidlock_bin() -> str:
    """The `bidlock` CLI: $BIDLOCK_BIN, else built with `cargo build -p bidlock-cli`."""
    path = os.environ.get("BIDLOCK_BIN")
    if path:
        return path
    subprocess.run(["cargo", "build", "-q", "-p", "bidlock-cli"], cwd=REPO, check=True)
    built = REPO / "target" / "debug" / "bidlock"
    assert built.is_file(), f"cargo build -p bidlock-cli did not produce {built}"
    return str(built)
