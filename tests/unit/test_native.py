"""streams.native: a compiled build is used only while it matches the sources on disk."""

from __future__ import annotations

import json
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
    assert native.state == "pure Python (streams modules already imported)"
