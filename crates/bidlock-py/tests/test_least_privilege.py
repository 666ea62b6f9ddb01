"""The package under the Redis user of deploy/redis/bidlock.acl (the file itself is
loaded): every call of the guide works on one server, through Sentinel and on a Redis
Cluster; a user without what locks need is refused with a BackendError that names the
missing permission (NOPERM), and nothing in Redis changes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from bidlock import AlreadyDoneError, BackendError, create_bid_lock_manager

from conftest import REPO, free_port, wait_until

ACL = REPO / "deploy" / "redis" / "bidlock.acl"
PASSWORD = "py-acl-pw"


def bidlock_rules() -> list[str]:
    """The words after `user bidlock` on the file's one uncommented line."""
    lines = [line for line in ACL.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("user bidlock "), lines
    return lines[0].split()[2:]


def load(port: int, rules: list[str]) -> None:
    with redis.Redis(port=port) as client:
        client.execute_command("ACL", "SETUSER", "bidlock", *rules, f">{PASSWORD}")


def with_credentials(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://bidlock:{PASSWORD}@{rest}"


class Servers:
    """redis-server processes (plain, cluster nodes or sentinels) on loopback, stopped together."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bidlock-py-acl-"))
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, port: int | None = None) -> int:
        port = port or free_port()
        d = self.dir / str(port)
        d.mkdir()
        self.procs.append(subprocess.Popen(
            ["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=port, socket_timeout=5)

        def up():
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(up, f"redis-server on {port}")
        client.close()
        return port

    def sentinel(self, master_port: int) -> int:
        port = free_port()
        conf = self.dir / f"sentinel-{port}.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor bidmaster 127.0.0.1 {master_port} 1\n")
        self.procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=port, socket_timeout=5)

        def knows():
            try:
                return client.execute_command("SENTINEL", "get-master-addr-by-name", "bidmaster")
            except redis.ConnectionError:
                return None

        wait_until(knows, "the sentinel to know the master")
        client.close()
        return port

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.stop()


def one_server(servers: Servers) -> str:
    port = servers.start()
    load(port, bidlock_rules())
    return with_credentials(f"redis://127.0.0.1:{port}/0")


def sentinel(servers: Servers) -> str:
    master = servers.start()
    load(master, bidlock_rules())
    port = servers.sentinel(master)
    return with_credentials(f"redis+sentinel://127.0.0.1:{port}/bidmaster/0")


def bus_free_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a port too."""
    return wait_until(lambda: (p := free_port()) < 55000 and p, "a free port below 55000")


def cluster(servers: Servers) -> str:
    ports = [servers.start("--cluster-enabled", "yes", "--cluster-node-timeout", "2000", port=bus_free_port())
             for _ in range(3)]
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    clients = [redis.Redis(port=p) for p in ports]
    wait_until(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients),
               "the cluster to be ok")
    for c in clients:
        c.close()
    for p in ports:
        load(p, bidlock_rules())
    return with_credentials("redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports))


@pytest.mark.parametrize("topology", [one_server, sentinel, cluster])
async def test_every_call_works_under_the_acl(servers, clean_env, topology):
    clean_env.setenv("REDIS_URL", topology(servers))
    manager = await create_bid_lock_manager(use_redis=True, ttl=1.5)
    assert manager.backend == "redis"
    assert await manager.acquire_lock("lp", "a", holder_id="h1")
    assert not await manager.acquire_lock("lp", "a", timeout=0.3)
    assert (await manager.status("lp", "a")).holder == "h1"
    assert [lock.posting_id for lock in await manager.locks("lp")] == ["a"]
    assert await manager.release_lock("lp", "a", "h1")
    async with manager.with_lock("lp", "b", timeout=5) as lease:
        await asyncio.sleep(1.0)  # renewed at a third of the ttl
        assert not lease.is_lost
    async with manager.bid_once("lp", "c") as bid:
        pass
    assert bid.outcome == "placed"
    with pytest.raises(AlreadyDoneError):
        async with manager.bid_once("lp", "c"):
            pass
    assert await manager.clear_done("lp", "c")
    assert await manager.health_check()
    assert await manager.acquire_lock("lp", "d")
    assert await manager.cleanup_all() >= 1
    assert manager.get_metrics()["lock_successes"] >= 3
    await manager.close()


def keys(port: int) -> dict:
    with redis.Redis(port=port) as c:
        return {k: (c.dump(k), c.pttl(k) > 0) for k in c.scan_iter(count=1000)}


async def test_a_user_without_what_locks_need_is_named_and_nothing_changes(servers, clean_env):
    port = servers.start()
    load(port, [r for r in bidlock_rules() if r != "~bid_lock_wait:*"])
    with redis.Redis(port=port) as admin:
        admin.set("bid_lock:lp:held", "someone", px=600_000)
    before = keys(port)
    clean_env.setenv("REDIS_URL", with_credentials(f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(BackendError) as raised:
        await create_bid_lock_manager(use_redis=True)
    assert "NOPERM" in str(raised.value) and "keys bid_lock_wait:*" in str(raised.value)
    assert keys(port) == before
