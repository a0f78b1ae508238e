"""The HTTP workers' listener: accepted connections send small writes at once (no Nagle)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from a10tts.api.worker import tcp_listener


async def nodelay_of_an_accepted_connection(listener: socket.socket) -> int:
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connection(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connection, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_connections_accepted_on_the_supervisors_listener_have_nagle_off(family, host) -> None:
    """`socket.create_server`, as the supervisor binds the port, leaves the protocol 0, and
    asyncio then leaves Nagle's algorithm on (a streamed chunk after the headers waited 40 ms
    for the client's delayed ACK); `tcp_listener` fixes the protocol so asyncio turns it off."""
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        bound = socket.create_server((host, 0), family=family)
    except OSError as exc:
        pytest.skip(f"cannot bind {host}: {exc}")
    assert bound.proto == 0
    assert asyncio.run(nodelay_of_an_accepted_connection(bound)) == 0
    listener = tcp_listener(socket.create_server((host, 0), family=family))
    assert listener.proto == socket.IPPROTO_TCP
    assert asyncio.run(nodelay_of_an_accepted_connection(listener)) != 0
