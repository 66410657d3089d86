"""detectors/ is pure: no Kafka, Faust, Prometheus, clock, environment, logging or streams."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

DETECTORS = Path(__file__).resolve().parents[2] / "detectors"
FORBIDDEN = {"faust", "aiokafka", "kafka", "prometheus_client", "os", "time", "logging", "streams"}
MODULES = sorted(DETECTORS.glob("*.py"))


def imported_roots(source: str) -> set[str]:
    """Top-level package of every import in a ``detectors/`` module's ``source``."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level in (0, 2):
            # level 2 (``from ..x``) climbs out of detectors/ to a top-level package
            names = [node.module] if node.module else [alias.name for alias in node.names]
            roots.update(name.split(".")[0] for name in names)
    return roots


def test_there_are_detector_modules() -> None:
    assert len(MODULES) >= 5


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MODULES])
def test_module_imports_nothing_impure(path: Path) -> None:
    bad = imported_roots(path.read_text(encoding="utf-8")) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MODULES])
def test_module_imports_cleanly(path: Path) -> None:
    importlib.import_module(f"detectors.{path.stem}")


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        pytest.param("import os.path", {"os"}, id="import-dotted"),
        pytest.param("from time import monotonic", {"time"}, id="from-import"),
        pytest.param("def f():\n    import logging", {"logging"}, id="nested"),
        pytest.param("from streams.records import Beacon", {"streams"}, id="streams"),
        pytest.param("from ..streams import records", {"streams"}, id="relative-out"),
        pytest.param("from .. import streams", {"streams"}, id="relative-out-name"),
        pytest.param("from . import sketch\nimport math", set(), id="relative-and-math"),
    ],
)
def test_the_checker_catches_what_it_should(source: str, caught: set[str]) -> None:
    assert imported_roots(source) & FORBIDDEN == caught
