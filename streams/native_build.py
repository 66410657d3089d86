"""Build the mypyc-compiled modules :mod:`streams.native` loads: ``python -m streams.native_build``.

Copies ``streams/`` and ``detectors/`` (the ``.py`` files only) to a temporary folder,
compiles :data:`~streams.native.MODULES` there with mypyc (mypy's settings from
``pyproject.toml``), and moves the result to ``.native/<python tag>/`` with the manifest
written last. If the sources change during the build, nothing is installed. Exit status 1
(and a message) when mypyc, a C compiler or the Python headers are missing: revwatch then
runs as pure Python. ``--clean`` removes the build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from streams.native import GROUP, MANIFEST, MODULES, PACKAGES, ROOT, native_dir, source_digest

SETUP = """\
import sys
from mypyc.build import mypycify
from setuptools import setup
setup(name="revwatch-native", packages=[], py_modules=[],
      ext_modules=mypycify(["--config-file", "mypy-config.toml", *sys.argv.pop(1).split(",")],
                           opt_level="3", group_name=%r))
"""


class BuildError(Exception):
    """The compiled modules could not be built (the reason is the message)."""


def build(root: Path = ROOT) -> Path:
    """Compile :data:`MODULES` and install them under :func:`native_dir`; the folder."""
    digest = source_digest(root)
    target = native_dir(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="revwatch-native-") as tmp:
        work, out = Path(tmp) / "src", Path(tmp) / "out"
        _copy_sources(root, work)
        _compile(work, out)
        if source_digest(root) != digest:
            msg = "the sources changed during the build; run it again"
            raise BuildError(msg)
        staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=target.parent))
        shutil.copytree(out, staged, dirs_exist_ok=True)
    clean(root)
    staged.rename(target)
    manifest = {"digest": digest, "modules": list(MODULES), "python": sys.version}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return target


def clean(root: Path = ROOT) -> None:
    """Remove the build of this interpreter (pure Python from the next start)."""
    target = native_dir(root)
    (target / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(target, ignore_errors=True)


def _copy_sources(root: Path, work: Path) -> None:
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            dest = work / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    shutil.copyfile(root / "pyproject.toml", work / "mypy-config.toml")
    (work / "setup.py").write_text(SETUP % GROUP)


def _compile(work: Path, out: Path) -> None:
    command = [sys.executable, "setup.py", ",".join(MODULES), "build_ext",
               "--build-lib", str(out), "--build-temp", str(work / "build")]
    try:
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False,
                              env=_compiler_env())
    except OSError as exc:
        raise BuildError(str(exc)) from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-60:])
        raise BuildError(tail or f"exit status {done.returncode}")


def _compiler_env() -> dict[str, str]:
    # mypyc turns ``int(n) != n`` on an ``int`` into ``n != n``, which gcc's -Werror refuses
    env = dict(os.environ)
    env["CFLAGS"] = f"{env.get('CFLAGS', '')} -Wno-tautological-compare".strip()
    return env


def main(argv: list[str]) -> int:
    if argv == ["--clean"]:
        clean()
        return 0
    try:
        where = build()
    except BuildError as exc:
        print(f"native build: failed, revwatch runs as pure Python:\n{exc}", file=sys.stderr)
        return 1
    print(f"native build: {len(MODULES)} modules compiled with mypyc into {where}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
