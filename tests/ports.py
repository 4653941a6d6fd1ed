"""Local TCP ports for servers the tests start (or for a port nothing listens on)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A local port nothing listens on now: bound by the OS, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
