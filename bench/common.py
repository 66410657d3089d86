"""Shared helpers of the benchmarks: data, machine description, repeats, tables, JSON.

Every benchmark measures a *floor* (the least work that touches the same data) and the
system in the same run, interleaved, at least three times; it prints the median, the
spread (min..max) and the ratio per run, and writes the same to ``bench/results/NAME.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("REVWATCH_BENCH_DATA", "/tmp/revwatch-bench"))
PYTHON = sys.executable


def machine() -> dict[str, Any]:
    """Where the figures were measured (CPU, cores, load, Python, packages)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    with suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": round(mem_kb / 1e6, 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "kernel": platform.release(),
            "host": socket.gethostname(), "packages": _versions()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out: dict[str, str] = {}
    for name in ("orjson", "numpy", "aiokafka", "faust-streaming", "aiohttp"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def dataset(days: float, scale: float = 1.0, seed: int = 1) -> tuple[Path, dict[str, int]]:
    """``beacons.jsonl`` and ``orders.jsonl`` of ``default_scenario`` (cached under DATA)."""
    from streams.simulate import default_scenario, write_files
    out = DATA / f"default-s{seed}-d{days:g}-x{scale:g}"
    counts = out / "counts.json"
    if not counts.exists():
        summary = write_files(default_scenario(seed, days=days, scale=scale), out)
        counts.write_text(json.dumps({"beacons": summary.beacons, "orders": summary.orders}))
    return out, json.loads(counts.read_text())


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def fmt(value: float, digits: int = 3) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain text table (also valid Markdown)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/NAME.json`` with the machine and the time of the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(), **payload}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return path


def run_child(args: Sequence[str], *, cpus: str | None = None, timeout_s: float = 3600.0,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python ARGS`` (optionally pinned with taskset); its last stdout line is JSON."""
    command = [PYTHON, *args]
    if cpus is not None and _has_taskset():
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          cwd=ROOT, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        msg = f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _has_taskset() -> bool:
    return any((Path(d) / "taskset").exists() for d in os.environ.get("PATH", "").split(":"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started in their own session; each group is killed on exit."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal
    if proc.poll() is None:
        try:  # SIGINT first: Faust shuts down cleanly and py-spy writes its profile
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass


def wait_for(check: Callable[[], bool], timeout_s: float, what: str,
             every_s: float = 0.2) -> None:
    """Poll ``check`` until it is true; RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    msg = f"timed out after {timeout_s:.0f}s waiting for {what}"
    raise RuntimeError(msg)


def http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except OSError:
        return False


@contextmanager
def kafka() -> Iterator[str]:
    """``host:port`` of the local Kafka broker; one this started is stopped on exit."""
    from streams.broker import LocalBroker
    port = int(os.environ.get("REVWATCH_BENCH_BROKER_PORT", "19192"))  # not the tests' port
    broker = LocalBroker(f"127.0.0.1:{port}", DATA / "kafka")
    if broker.status().answering:
        yield broker.host_port
        return
    broker.start(timeout_s=120.0)
    try:
        yield broker.host_port
    finally:
        broker.stop()
