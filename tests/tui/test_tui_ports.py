"""The port source on real sockets: who listens, and how many clients are connected."""

from __future__ import annotations

import os
import socket

from a10tts_tui.sources.ports import PortWatcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_nobody_listens_on():
    snapshot = PortWatcher("0.0.0.0", _free_port()).read()
    assert snapshot.listening is False and snapshot.listeners == () and snapshot.connections == 0


def test_listener_process_and_connections_are_seen():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        watcher = PortWatcher("0.0.0.0", port)  # the configured wildcard covers a loopback listener
        snapshot = watcher.read()
        assert snapshot.listening is True
        assert snapshot.owner_pids == {os.getpid()}
        assert snapshot.listeners[0].address == f"127.0.0.1:{port}"
        assert snapshot.listeners[0].name  # this test's own process name
        assert snapshot.connections == 0
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            with accepted:
                assert watcher.read().connections == 1
                assert client.fileno() > 0


def test_a_listener_on_another_address_is_not_ours():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        snapshot = PortWatcher("127.0.0.2", server.getsockname()[1]).read()
        assert snapshot.listening is False
