"""asyncio's TLS read buffer, sized for an operator with many mostly idle TLS connections.

CPython's asyncio (3.11 to 3.13) gives every TLS connection a read buffer of
``SSLProtocol.max_size``, 256 KiB, allocated and zero-filled when the connection opens, however
little it ever reads (python/cpython#109534). The operator holds over a hundred of them: the
hub API server keeps a connection to the webhook per call it has had in flight at once, and the
operator's own clients keep pools to the hub. In the 10,000-job memory run those buffers were
31.5 MB of the operator's RSS. A TLS record carries at most 16 KiB, so 32 KiB still takes
whole records per read; a large response costs more reads, not more bytes.
"""

from __future__ import annotations

import logging
from asyncio import sslproto
from typing import Final

logger = logging.getLogger(__name__)

READ_BUFFER_BYTES: Final = 32 * 1024


def limit_read_buffers(size: int = READ_BUFFER_BYTES) -> None:
    """Give TLS connections opened from now on a read buffer of ``size`` bytes at most."""
    protocol = getattr(sslproto, "SSLProtocol", None)
    current = getattr(protocol, "max_size", None)
    if protocol is None or not isinstance(current, int):
        logger.debug("asyncio TLS buffers left alone: this Python's asyncio has no max_size")
        return
    protocol.max_size = min(current, size)
