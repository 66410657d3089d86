"""Process and file helpers of the local broker (:mod:`streams.broker`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from streams.errors import BrokerError

TAIL_LINES = 25


def is_live_kafka(pid: int) -> bool:
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # not Linux: trust the pid
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            return True
        return False
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and b"kafka.Kafka" in cmdline


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def send_signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create {what} {path}: {exc.strerror}; choose a writable directory"
        raise BrokerError(message) from exc
    if not os.access(path, os.W_OK):
        message = f"{what} {path} is not writable; choose a writable directory"
        raise BrokerError(message)


def run_tool(command: list[str], *, timeout_s: float, what: str) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        message = f"{what} did not finish within {timeout_s:g} s: {' '.join(command)}"
        raise BrokerError(message) from exc
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-TAIL_LINES:])
        message = f"{what} failed (exit {done.returncode}); the end of its output:\n{tail}"
        raise BrokerError(message)
    return output


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
