"""The package never shows the Redis password: not in exceptions (message, repr, args,
chained causes, formatted tracebacks), reprs of managers, leases and records, warnings,
the `bidlock` logger at DEBUG, nor anything written to stdout or stderr, with the
password in REDIS_URL or in REDIS_PASSWORD, right or wrong, the server up, unreachable,
or spoken to in TLS it does not speak, and in a malformed URL."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import traceback
import warnings

import pytest
import redis

from bidlock import LockError, RedisBidLockManager, create_bid_lock_manager, get_bid_lock_manager

from conftest import free_port, wait_until

SECRET = "PySecr3t-never-printed"
WRONG = "PyWr0ng-never-printed"


@pytest.fixture
def server():
    """A redis-server that requires SECRET."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="bidlock-py-secret-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", d, "--requirepass", SECRET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=SECRET)

    def up():
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    wait_until(up, "redis-server")
    client.close()
    yield port
    proc.kill()
    proc.wait(timeout=10)
    shutil.rmtree(d, ignore_errors=True)


def shown(value) -> str:
    """Everything Python can show of a value, an exception's chain included."""
    parts = [str(value), repr(value)]
    if isinstance(value, BaseException):
        parts += [repr(value.args), "".join(traceback.format_exception(value))]
        for linked in (value.__cause__, value.__context__):
            if linked is not None:
                parts.append(shown(linked))
    return "\n".join(parts)


def assert_clean(what: str, text: str) -> None:
    for secret in (SECRET, WRONG):
        assert secret not in text, f"{what} shows the password:\n{text}"


async def session() -> str:
    """Every call, through the process-wide manager; everything it shows."""
    out = []
    try:
        manager = await get_bid_lock_manager()
    except LockError as e:
        return shown(e)
    out += [repr(manager), str(manager.location)]
    for call in (
        lambda: manager.acquire_lock("sec", "a", timeout=0),
        lambda: manager.status("sec", "a"),
        lambda: manager.locks(),
        lambda: manager.release_lock("sec", "a"),
        lambda: manager.health_check(),
        lambda: manager.cleanup_all(),
    ):
        try:
            out.append(shown(await call()))
        except LockError as e:
            out.append(shown(e))
    try:
        async with manager.with_lock("sec", "b", timeout=0) as lease:
            out.append(repr(lease))
        async with manager.bid_once("sec", "c", timeout=0) as bid:
            out.append(repr(bid))
    except LockError as e:
        out.append(shown(e))
    out.append(repr(manager.get_metrics()))
    await manager.close()
    return "\n".join(out)


def url(port: int, password: str, scheme: str = "redis") -> str:
    return f"{scheme}://:{password}@127.0.0.1:{port}/0"


CASES = {
    "right, REDIS_URL": lambda port: {"REDIS_URL": url(port, SECRET)},
    "right, REDIS_PASSWORD": lambda port: {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port),
                                           "REDIS_PASSWORD": SECRET},
    "wrong, REDIS_URL": lambda port: {"REDIS_URL": url(port, WRONG)},
    "wrong, REDIS_PASSWORD": lambda port: {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port),
                                           "REDIS_PASSWORD": WRONG},
    "unreachable": lambda port: {"REDIS_URL": url(free_port(), SECRET)},
    "TLS to a plain port": lambda port: {"REDIS_URL": url(port, SECRET, "rediss")},
    "no scheme": lambda port: {"REDIS_URL": f"u:{SECRET}@127.0.0.1:{port}"},
    "slash in the password": lambda port: {"REDIS_URL": f"redis://u:a/{SECRET}@127.0.0.1:{port}/0"},
}


@pytest.mark.parametrize("use_redis", ["true", "auto"])
@pytest.mark.parametrize("case", list(CASES))
async def test_nothing_shown_holds_the_password(server, clean_env, caplog, capfd, case, use_redis):
    for k, v in CASES[case](server).items():
        clean_env.setenv(k, v)
    clean_env.setenv("USE_REDIS_LOCKS", use_redis)
    caplog.set_level(logging.DEBUG, logger="bidlock")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = await session()
    text += "\n".join(str(w.message) for w in caught)
    text += "\n".join(r.getMessage() for r in caplog.records)
    printed = capfd.readouterr()
    assert_clean(case, text + printed.out + printed.err)


def test_explicit_urls_are_never_shown(server):
    for given in (url(server, SECRET), url(server, WRONG), f"u:{SECRET}@h:1", f"redis://u:{SECRET}@h:notaport"):
        try:
            manager = RedisBidLockManager(redis_url=given)
        except LockError as e:
            assert_clean(given, shown(e))
        except ValueError as e:
            assert_clean(given, shown(e))
        else:
            assert_clean(given, repr(manager) + str(manager.location))


async def test_a_refused_connect_says_why_without_the_password(server, clean_env):
    clean_env.setenv("REDIS_URL", url(server, WRONG))
    with pytest.raises(LockError) as raised:
        await create_bid_lock_manager(use_redis=True)
    assert "authentication failed" in str(raised.value)
    assert_clean("the refusal", shown(raised.value))
