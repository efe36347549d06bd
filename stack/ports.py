"""Free loopback ports for the pieces of a local gateway.

Why this module exists: several stacks (tests, a developer's ``endpoint-picker stack``) may run at once, so no
port is hard-coded. A port is found by binding port 0 and reading what the kernel chose; ports handed out by
this process are remembered so two pieces of one process never get the same number even if the kernel
recycles it.
"""

from __future__ import annotations

import socket
import threading

_handed_out: set[tuple[str, int]] = set()
_lock = threading.Lock()
_MAX_ATTEMPTS = 100


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago and that this process has not handed out before."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with _lock:
        for _ in range(_MAX_ATTEMPTS):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if (host, port) not in _handed_out:
                _handed_out.add((host, port))
                return port
    raise RuntimeError(f"no fresh free port on {host} after {_MAX_ATTEMPTS} attempts")


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
