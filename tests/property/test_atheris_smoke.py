"""A bounded atheris (libFuzzer) run of ``tests/fuzz/fuzz_parsers.py``: no crash allowed.

The harness runs in a subprocess (libFuzzer owns the process and exits on a crash); a
seeded corpus in a temp dir steers it to valid records quickly. The second test feeds it
a planted crash, so a harness that swallowed exceptions would fail here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).parents[1] / "fuzz" / "fuzz_parsers.py"
RUNS = 30_000


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is not installed: `.venv/bin/pip install atheris` (dev extra)")
    return subprocess.run([sys.executable, str(HARNESS), *args], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})}, cwd=HARNESS.parents[2])


def test_parsers_survive_a_bounded_fuzzing_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = _run(str(corpus), f"-runs={RUNS}", "-max_total_time=25", "-timeout=10",
                  "-rss_limit_mb=1024", "-max_len=4096")
    tail = result.stderr[-3000:]
    assert result.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "DONE" in result.stderr, tail
    assert len(list(corpus.iterdir())) > 12, "no input beyond the seeds: nothing was explored"


def test_the_harness_reports_a_crash(tmp_path: Path) -> None:
    crash = tmp_path / "crash-input"
    crash.write_bytes(b"https://s.example/?revwatch-canary")
    result = _run(str(crash), env={"REVWATCH_FUZZ_CANARY": "1"})
    assert result.returncode != 0
    assert "canary: the harness reports crashes" in result.stdout + result.stderr
