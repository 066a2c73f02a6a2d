"""The embedded nats-server's environment: how many cores its Go code runs on at once.

It shares the machine with the gateway, writer and closer, so by default it gets half
of the cores (README "The embedded server's cores"; issue 13)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from courier.errors import ConfigError
from courier.settings import load_settings
from courier.transport import server
from courier.transport.server import embedded_nats, server_env


def _cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr("courier.transport.server._usable_cores", lambda: n)


@pytest.mark.parametrize(("cores", "expected"), [(1, "1"), (2, "1"), (3, "1"), (8, "4")])
def test_the_server_gets_half_the_cores_by_default(monkeypatch, cores, expected):
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    _cores(monkeypatch, cores)
    assert server_env(None)["GOMAXPROCS"] == expected


def test_a_gomaxprocs_in_the_environment_wins_over_the_default(monkeypatch):
    monkeypatch.setenv("GOMAXPROCS", "3")
    _cores(monkeypatch, 8)
    assert server_env(None)["GOMAXPROCS"] == "3"


def test_the_setting_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("GOMAXPROCS", "3")
    assert server_env(2)["GOMAXPROCS"] == "2"


def test_the_rest_of_the_environment_is_passed_on(monkeypatch):
    monkeypatch.setenv("COURIER_TEST_MARKER", "kept")
    assert server_env(None)["COURIER_TEST_MARKER"] == "kept"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_the_running_server_has_the_configured_gomaxprocs(tmp_path, monkeypatch):
    monkeypatch.setenv("GOMAXPROCS", "7")  # the setting must win over it
    settings = load_settings(data_dir=tmp_path / "data", nats={"port": 0, "max_procs": 2})
    with embedded_nats(settings) as server:
        assert server.process is not None
        assert _environ(server.process.pid)["GOMAXPROCS"] == "2"


def test_a_max_procs_below_one_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"nats\.max_procs"):
        load_settings(data_dir=tmp_path / "data", nats={"max_procs": 0})


def test_a_free_port_is_chosen_below_the_ports_outgoing_connections_get(monkeypatch):
    """An outgoing connection (a leaf node's, a client's) cannot take it between the
    check and the server's bind."""
    monkeypatch.setattr(server, "_ephemeral_range", lambda: (32768, 60999))
    ports = {server.free_port() for _ in range(20)}
    assert all(10_000 <= p < 32768 for p in ports)
    assert len(ports) > 1  # random, so parallel workers do not collide in step


def test_a_free_port_comes_from_the_os_where_the_range_leaves_no_room(monkeypatch):
    monkeypatch.setattr(server, "_ephemeral_range", lambda: (1024, 65535))
    with socket.socket() as s:
        s.bind(("127.0.0.1", server.free_port()))  # free, whatever range it is from
    monkeypatch.setattr(server, "_ephemeral_range", lambda: None)
    assert server.port_is_free("127.0.0.1", server.free_port())


def test_a_port_in_use_is_never_chosen(monkeypatch):
    monkeypatch.setattr(server, "_ephemeral_range", lambda: (32768, 60999))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.free_port()))
        taken.listen()
        in_use = taken.getsockname()[1]
        tried: list[int] = []

        class Picks:  # the taken port first, then the next one
            def randrange(self, low: int, high: int) -> int:
                tried.append(in_use + len(tried))
                return tried[-1]

        monkeypatch.setattr(server.random, "SystemRandom", Picks)
        assert server.free_port() == in_use + 1
        assert tried == [in_use, in_use + 1]
