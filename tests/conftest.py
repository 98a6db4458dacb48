"""Shared pytest fixtures: a real redis-server per test, and tcpdump captures of it.

Fixtures fail (never skip) when redis-server, redis-cli or tcpdump is missing: see `tests/redis_fixtures.py`.

    def test_x(redis_server):                       # default server
        redis_server.cli("SET", "k", "v")
    def test_y(redis_server_factory):               # custom config
        srv = redis_server_factory(["user alice on >pw ~* +@all"], password="secret")
    def test_z(redis_server, tcpdump_factory, tmp_path):
        with tcpdump_factory(tmp_path / "c.pcap", port=redis_server.port):
            redis_server.cli("PING")
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # importable also when tests/ becomes a package or pytest runs with --import-mode=importlib
    sys.path.insert(0, _HERE)

from redis_fixtures import RedisServer, Tcpdump, ToolMissing, require_tool  # noqa: E402


def _require(*tools: str) -> None:
    for tool in tools:
        try:
            require_tool(tool)
        except ToolMissing as e:
            pytest.fail(str(e), pytrace=False)


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Call with `(extra_config=[...], password=None)` to get a started `RedisServer`; all are cleaned up."""
    _require("redis-server", "redis-cli")
    servers: list[RedisServer] = []

    def make(extra_config: list[str] | None = None, password: str | None = None) -> RedisServer:
        srv = RedisServer(extra_config=list(extra_config or []), password=password)
        servers.append(srv)  # appended before start: a failed start is still cleaned up
        return srv.start()

    try:
        yield make
    finally:
        for srv in servers:
            srv.cleanup()


@pytest.fixture
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A started default `RedisServer` (no password), stopped after the test."""
    return redis_server_factory()


@pytest.fixture
def tcpdump_factory() -> Iterator[Callable[..., Tcpdump]]:
    """Returns `Tcpdump` (same arguments) and makes sure every capture it made is stopped after the test."""
    _require("tcpdump")
    dumps: list[Tcpdump] = []

    def make(*args: object, **kwargs: object) -> Tcpdump:
        dump = Tcpdump(*args, **kwargs)  # type: ignore[arg-type]
        dumps.append(dump)
        return dump

    try:
        yield make
    finally:
        for dump in dumps:
            dump.stop()
