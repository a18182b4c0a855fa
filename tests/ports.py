"""A free TCP port for the rendezvous of a multi-process test, so that a test never collides with another
launcher on the machine (DeepSpeed's and accelerate's default port is 29500)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the operating system has just reported free on localhost."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
