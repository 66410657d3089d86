"""streams.native: a compiled build is used only while it matches the sources on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import streams.records  # noqa: F401  # a module the build would replace, imported
from streams import native


@pytest.fixture(autouse=True)
def _keep_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "state", native.state)  # what this process really runs
    monkeypatch.delenv("REVWATCH_NATIVE", raising=False)


def _fake_root(tmp_path: Path) -> Path:
    for package in native.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('"""x"""\n')
    (tmp_path / "streams" / "records.py").write_text("A = 1\n")
    return tmp_path


def _manifest(root: Path, digest: str) -> None:
    where = native.native_dir(root)
    where.mkdir(parents=True)
    (where / native.MANIFEST).write_text(json.dumps({"digest": digest,
                                                     "modules": list(native.MODULES)}))


def test_digest_follows_every_source_file(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    before = native.source_digest(root)
    (root / "detectors" / "new.py").write_text("B = 2\n")
    assert native.source_digest(root) != before


def test_no_build_means_pure_python(tmp_path: Path) -> None:
    path: list[str] = []
    assert not native.enable(path, _fake_root(tmp_path))
    assert path == []
    assert native.state == "pure Python (no build)"


def test_an_edited_source_is_never_shadowed(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    _manifest(root, native.source_digest(root))
    (root / "streams" / "records.py").write_text("A = 2\n")
    path: list[str] = []
    assert not native.enable(path, root)
    assert path == []
    assert native.state == "pure Python (sources changed since the build)"


def test_switched_off_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_root(tmp_path)
    _manifest(root, native.source_digest(root))
    monkeypatch.setenv("REVWATCH_NATIVE", "0")
    assert not native.enable([], root)
    assert native.state == "pure Python (REVWATCH_NATIVE=0)"


def test_a_current_build_is_not_mixed_with_loaded_modules(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)  # streams.records is imported (above)
    _manifest(root, native.source_digest(root))
    assert not native.enable([], root)
    assert native.state == "pure Python (streams.records already imported)"


def test_a_detectors_module_imported_first_keeps_everything_pure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detectors.sketch  # noqa: F401  # a detectors module, imported (as if before streams)
    for name in native.module_names():
        if name != "detectors.sketch":
            monkeypatch.delitem(sys.modules, name, raising=False)  # restored after the test
    root = _fake_root(tmp_path)
    _manifest(root, native.source_digest(root))
    assert not native.enable([], root)
    assert native.state == "pure Python (detectors.sketch already imported)"


def test_the_build_names_every_detectors_module() -> None:
    # every statistics module is compiled with the rest (a module left out would be imported
    # as pure Python from the compiled ones, which is slower, and mixed)
    modules = {path.name for path in (native.ROOT / "detectors").glob("*.py")} - {"__init__.py"}
    assert {f"{name.split('.')[-1]}.py" for name in native.module_names()
            if name.startswith("detectors.")} == modules
