"""Optional mypyc-compiled copies of the hot modules, used only while they are current.

``scripts/bootstrap`` runs :mod:`streams.native_build`, which compiles :data:`MODULES` with
mypyc into ``.native/<python tag>/`` (outside the package) and writes a manifest holding a
SHA-256 digest of every ``.py`` file of ``streams/`` and ``detectors/`` as compiled. When
``streams`` is imported, :func:`enable` puts the compiled folder first on the package's
``__path__`` only if that manifest matches the sources on disk now, so an edited source is
never shadowed by an old build: any edit anywhere in either package means pure Python until
the next build. All modules or none: compiled modules call each other natively, so if any of
them was imported before ``streams`` (a ``detectors`` module alone, say), the process stays
pure Python; ``tests/conftest.py`` imports ``streams`` first for that reason. The loader
lives here, not in ``detectors/``, which stays free of I/O: :func:`enable` also puts the
compiled folder first on ``detectors.__path__`` (importing only that package's empty
``__init__``).

``REVWATCH_NATIVE=0`` forces pure Python. Nothing here imports mypyc.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path

import detectors  # the package only (an empty __init__): its modules load after enable()

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streams", "detectors")
# the per-record path (replay, worker), the collector's per-request path, and the detectors
# (the minute ticks and the per-session buckets and sketches)
MODULES = ("streams/records.py", "streams/session_state.py", "streams/sessions.py",
           "streams/urls.py", "streams/replay.py", "streams/beacons.py", "streams/client_fields.py",
           "streams/scrub.py", "streams/collector.py",
           *(f"detectors/{name}.py" for name in (
               "baseline", "buckets", "campaign", "campaign_money", "campaign_params",
               "campaign_state",
               "conv_season", "conversion", "device_scan", "elasticity", "episodes", "ewcounts",
               "ewstats", "first_day", "funnel", "held", "incident_state", "incidents", "lag",
               "latency",
               "latency_track", "localize", "monitor", "pricing", "reach", "revenue", "scan_lists",
               "severity", "shortfall", "site", "site_season",
               "sketch", "stakes", "strata", "summary", "verdicts", "where", "window")))
GROUP = "revwatch_native"  # mypyc's shared library: revwatch_native__mypyc
MANIFEST = "manifest.json"

state = "pure Python (not checked yet)"  # what enable() decided, for logs and benchmarks


def module_names() -> list[str]:
    """The dotted names of :data:`MODULES` (``streams.records``, ``detectors.monitor``...)."""
    return [path.removesuffix(".py").replace("/", ".") for path in MODULES]


def native_dir(root: Path = ROOT) -> Path:
    """Where the build for this interpreter lives (``.native/cpython-311``)."""
    return root / ".native" / sys.implementation.cache_tag


def source_digest(root: Path = ROOT) -> str:
    """SHA-256 over the path and bytes of every ``.py`` file of :data:`PACKAGES`."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def enable(package_path: MutableSequence[str], root: Path = ROOT) -> bool:
    """Put the compiled modules first on ``streams.__path__`` if the build is current."""
    global state  # noqa: PLW0603  # one decision per process, read by reports
    where = native_dir(root)
    reason = _unusable(where, root)
    if reason:
        state = f"pure Python ({reason})"
        return False
    try:
        _load_group(where)
    except (ImportError, OSError) as exc:
        state = f"pure Python (build unloadable: {exc})"
        return False
    package_path.insert(0, str(where / "streams"))
    detectors.__path__.insert(0, str(where / "detectors"))
    state = f"mypyc ({where})"
    return True


def _unusable(where: Path, root: Path) -> str | None:
    """Why the build in ``where`` may not be used (None: it may)."""
    if os.environ.get("REVWATCH_NATIVE", "1") == "0":
        return "REVWATCH_NATIVE=0"
    try:
        manifest = json.loads((where / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no build"
    if manifest.get("digest") != source_digest(root) or manifest.get("modules") != list(MODULES):
        return "sources changed since the build"
    early = [name for name in module_names() if name in sys.modules]
    if early:
        return f"{early[0]} already imported"
    return None


def _load_group(where: Path) -> None:
    """Import mypyc's shared library from ``where`` (the compiled modules import it by name)."""
    name = f"{GROUP}__mypyc"
    if name in sys.modules:
        return
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    spec = importlib.util.spec_from_file_location(name, where / f"{name}{suffix}")
    if spec is None or spec.loader is None:
        msg = f"cannot load {name} from {where}"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
