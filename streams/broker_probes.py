"""Cheap probes of a broker address: is the port free, does a Kafka broker answer there."""

from __future__ import annotations

import errno
import socket
import struct

from streams.errors import BrokerError


def split_host_port(host_port: str) -> tuple[str, int]:
    """``"127.0.0.1:9092"`` -> ``("127.0.0.1", 9092)``; BrokerError if it is not one."""
    host, _, port_text = host_port.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        message = f"broker address {host_port!r} must look like host:port"
        raise BrokerError(message)
    return host.strip("[]"), int(port_text)


def port_is_free(host: str, port: int) -> bool | None:
    """True if we could listen on ``host:port``; None if ``host`` is not this machine's."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:
            return None
        except OSError as exc:
            return None if exc.errno == errno.EADDRNOTAVAIL else False
    return True


def metadata_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether ``host:port`` answers a Kafka Metadata (v1) request naming a live broker.

    A raw request keeps the probe cheap (no client threads, no log noise); Kafka lists a
    broker only once it is registered and unfenced, i.e. ready for clients.
    """
    client = b"revwatch-probe"
    body = struct.pack(">hhih", 3, 1, 7, len(client)) + client + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _receive(sock, 4))
            reply = _receive(sock, size) if 8 <= size <= 1 << 20 else b""
    except OSError:
        return False
    if len(reply) < 8:
        return False
    correlation_id, brokers = struct.unpack_from(">ii", reply)
    return bool(correlation_id == 7 and brokers >= 1)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            message = "connection closed"
            raise ConnectionError(message)
        data += chunk
    return data
