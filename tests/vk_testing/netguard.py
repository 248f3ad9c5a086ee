"""Block every non-loopback connection for the whole test run: proof that nothing reaches a network.

Loopback (127.0.0.0/8, ::1, localhost, Unix sockets) stays open for the T2/T3 servers. A blocked
attempt raises `NetworkBlocked` and is recorded, so a test can also assert that nothing even tried.
"""
from __future__ import annotations

import ipaddress
import socket

attempts: list[str] = []


class NetworkBlocked(OSError):
    pass


def _is_loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: resolving it already leaves the machine


_orig_connect = socket.socket.connect
_orig_connect_ex = socket.socket.connect_ex
_orig_getaddrinfo = socket.getaddrinfo
_orig_create_connection = socket.create_connection


def _check(sock_family, address):
    if sock_family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        if not _is_loopback(address[0]):
            attempts.append(f"connect {address}")
            raise NetworkBlocked(f"VisionKit tests block network access: connect to {address!r}")


def _connect(self, address):
    _check(self.family, address)
    return _orig_connect(self, address)


def _connect_ex(self, address):
    _check(self.family, address)
    return _orig_connect_ex(self, address)


def _getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host):
        attempts.append(f"resolve {host}")
        raise NetworkBlocked(f"VisionKit tests block network access: resolving {host!r}")
    return _orig_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    socket.socket.connect = _orig_connect
    socket.socket.connect_ex = _orig_connect_ex
    socket.getaddrinfo = _orig_getaddrinfo
