"""The wheel: it holds every subpackage of cnnvis_core and the demo weights, and installed in a fresh
virtual environment it imports and runs from outside the source tree.

Offline: the wheel is built without build isolation (the installed setuptools builds it), the virtual
environment sees the system's site-packages (torch and the rest come from there) and the wheel is
installed with ``--no-deps --no-index``. The build runs on a copy of the source tree in a temporary
folder, so it leaves no ``build/`` or ``*.egg-info`` behind in the checkout (and no stale ``build/lib``
of an earlier build can slip into the wheel).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPORT

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cnnvis_core"
#: what the build never needs and the copy leaves out
NOT_COPIED = (".git", "out", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache",
              ".ruff_cache", ".benchmarks", "screenshots", ".whl", ".gl", ".venv", "venv", "*.whl")
#: environment variables passed on to the subprocesses: nothing of Python's, pip's or pytest's own
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TMP", "TEMP", "SYSTEMROOT")


def _clean_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in KEPT_ENV if key in os.environ}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _run(command: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False)
    return done.stdout


def _packages_on_disk() -> set[str]:
    """cnnvis_core and every folder below it with an ``__init__.py``, as dotted names."""
    return {".".join(init.parent.relative_to(ROOT).parts) for init in PACKAGE.rglob("__init__.py")
            if "__pycache__" not in init.parts}


def _modules_on_disk() -> set[str]:
    """Every module of those packages: the packages themselves and their ``.py`` files."""
    modules = set(_packages_on_disk())
    for package in list(modules):
        folder = ROOT.joinpath(*package.split("."))
        modules |= {f"{package}.{path.stem}" for path in folder.glob("*.py") if path.name != "__init__.py"}
    return modules


def _demo_data_on_disk() -> set[str]:
    weights = PACKAGE / "demo" / "weights"
    return {path.relative_to(ROOT).as_posix() for pattern in ("*.safetensors", "*.json")
            for path in weights.glob(pattern)}


#: run in the virtual environment from a folder outside the source tree
PROBE = textwrap.dedent("""
    import importlib, json, pkgutil, sys

    import numpy as np

    import cnnvis_core
    modules = ["cnnvis_core"] + [m.name for m in pkgutil.walk_packages(cnnvis_core.__path__, "cnnvis_core.")]
    for name in modules:
        importlib.import_module(name)

    import cnnvis_core.demo
    from cnnvis_core import Engine

    result = Engine.demo(device="cpu").cam(cnnvis_core.demo.sample(12345)[0], "gradcam")
    print(json.dumps({"file": cnnvis_core.__file__, "modules": modules, "shape": list(result.map.shape),
                      "input_size": cnnvis_core.demo.INPUT_SIZE, "finite": bool(np.isfinite(result.map).all()),
                      "sys_path": sys.path}))
""")


def test_wheel_holds_every_subpackage_and_installs_and_runs_outside_the_tree(tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("setuptools is missing, which builds the wheel offline: "
                    "python3 -m pip install -r requirements-dev.txt", pytrace=False)
    started = time.monotonic()
    source, dist, venv, outside = (tmp_path / name for name in ("source", "dist", "venv", "outside"))
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_COPIED))
    outside.mkdir()

    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(source)], cwd=outside)
    wheels = list(dist.glob("cnnvis-*.whl"))
    assert len(wheels) == 1, wheels
    built = time.monotonic()

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    in_wheel = {name.removesuffix("/__init__.py").replace("/", ".") for name in names
                if name.endswith("/__init__.py")}
    packages = _packages_on_disk()
    files = {f"{module.replace('.', '/')}{'/__init__' if module in packages else ''}.py"
             for module in _modules_on_disk()}
    assert packages <= in_wheel, f"subpackages missing from the wheel: {sorted(packages - in_wheel)}"
    assert files <= names, f"modules missing from the wheel: {sorted(files - names)}"
    assert "cnnvis_core/demo/weights/demonet.safetensors" in names
    assert _demo_data_on_disk() <= names, f"demo data missing: {_demo_data_on_disk() - names}"
    assert not any(name.startswith(("tests/", "bench/", "dashboard/", "pages/")) for name in names)

    # pip from the system's site-packages installs into the environment it runs in: the venv
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=outside)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheels[0])],
         cwd=outside)
    installed = time.monotonic()

    probe = outside / "probe.py"
    probe.write_text(PROBE)
    report = json.loads(_run([str(python), str(probe)], cwd=outside).strip().splitlines()[-1])
    REPORT["wheel test: build · venv and install · import and Grad-CAM"] = (
        f"{built - started:.1f} s · {installed - built:.1f} s · {time.monotonic() - installed:.1f} s")

    package_file = Path(report["file"]).resolve()
    assert package_file.is_relative_to(venv.resolve()), f"cnnvis_core imported from {package_file}, not the venv"
    assert not package_file.is_relative_to(ROOT), package_file
    assert not any(Path(entry or ".").resolve() == ROOT for entry in report["sys_path"]), report["sys_path"]
    assert set(report["modules"]) == _modules_on_disk()
    size = report["input_size"]  # DemoNet's (height, width)
    assert report["shape"] == (size if isinstance(size, list) else [size, size]) and report["finite"]


def _requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file: comments, blanks and ``-r`` lines left out."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-r"))]


def test_pyproject_dependencies_are_the_requirements_files():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == _requirements(ROOT / "requirements.txt")
    assert project["optional-dependencies"]["dev"] == _requirements(ROOT / "requirements-dev.txt")
