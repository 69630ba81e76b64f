"""TLS connections made after limit_read_buffers() cost kilobytes, and still carry anything."""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc
from asyncio import sslproto
from pathlib import Path

import pytest

from suanli.certs import generate_webhook_certificates
from suanli.tls_buffers import READ_BUFFER_BYTES, limit_read_buffers

CONNECTIONS = 20
PAYLOAD = 1024 * 1024 + 17  # several buffers' worth, not a multiple of one


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _connections_and_bytes_per_connection(directory: Path) -> tuple[bytes, float]:
    """Echo a large payload over one connection, then open many: traced bytes per connection."""
    certificates = generate_webhook_certificates(directory)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificates.cert_file, certificates.key_file)
    client_context = ssl.create_default_context(cadata=certificates.ca_pem.decode())
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        payload = bytes(range(256)) * (PAYLOAD // 256) + b"x" * (PAYLOAD % 256)
        writer.write(payload)
        echoed = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        opened = [
            await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
            for _ in range(CONNECTIONS)
        ]
        await asyncio.sleep(0.1)  # the server side has accepted them all
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / CONNECTIONS
        tracemalloc.stop()
        for _, each in opened:
            each.close()
            await each.wait_closed()
    assert echoed == payload
    return echoed, per_connection


def test_both_ends_of_a_tls_connection_cost_kilobytes_not_half_a_megabyte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Restored after the test: other tests run with the interpreter's own size.
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", sslproto.SSLProtocol.max_size)
    limit_read_buffers()
    assert sslproto.SSLProtocol.max_size == READ_BUFFER_BYTES
    _, per_connection = asyncio.run(_connections_and_bytes_per_connection(tmp_path))
    # Two ends, each a read buffer and its TLS state; 256 KiB buffers made this over 512 KiB.
    assert per_connection < 4 * READ_BUFFER_BYTES, per_connection


def test_a_larger_limit_never_grows_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", 16 * 1024)
    limit_read_buffers(1024 * 1024)
    assert sslproto.SSLProtocol.max_size == 16 * 1024
