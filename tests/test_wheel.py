"""The package as a user installs it: a wheel built from this repository, installed (not editable)
into a fresh virtual environment, run from another directory.

Installing torch into the fresh environment would download gigabytes, so the fresh environment
reaches the project environment's packages through a .pth file naming its site-packages folder
as a plain path line. Python only appends such a line to sys.path: the .pth files inside that
folder (among them the editable install's, which puts this repository's src/ on the path) are not
run, so `import torchcls` there finds the installed wheel, and the tests check that it does.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests._data import needs_fmnist

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# what setuptools reads to build the wheel (copied, so that the build writes nothing into the checkout)
BUILD_INPUTS = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE", "LICENSE.txt")


def _version(dist: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in importlib.metadata.version(dist).split(".")[:2] if p.isdigit())
    except importlib.metadata.PackageNotFoundError:
        return ()


def _can_build_without_isolation() -> bool:
    """This environment's setuptools meets pyproject's build requirement (>= 68) and can write
    wheels itself (>= 70.1, or with the wheel package)."""
    setuptools = _version("setuptools")
    return setuptools >= (70, 1) or (setuptools >= (68,) and bool(_version("wheel")))


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


def _check(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    shutil.copytree(SRC, tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    for name in BUILD_INPUTS:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, tree / name)
    isolation = ["--no-build-isolation"] if _can_build_without_isolation() else []
    dist = tmp / "dist"
    _check(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", dist, tree], timeout=600))
    (whl,) = dist.glob("torchcls-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> dict:
    """A fresh virtual environment with the wheel installed; its python, bin folder, environment
    variables, and a working directory outside the repository."""
    tmp = tmp_path_factory.mktemp("fresh")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1", VIRTUAL_ENV=str(env_dir))
    work = tmp / "work"
    work.mkdir()
    # the project environment's pip installs into the fresh one (which has no pip of its own)
    _check(_run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel]))
    site = Path(
        _check(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work)).strip()
    )
    assert site.is_relative_to(env_dir)
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))  # the project venv's, in order
    (site / "torchcls_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return {"dir": env_dir, "python": python, "bin": bin_dir, "env": env, "cwd": work}


def _in_fresh(fresh, *cmd, timeout=300) -> str:
    return _check(_run(cmd, cwd=fresh["cwd"], env=fresh["env"], timeout=timeout))


def test_wheel_ships_every_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    folder = SRC / "torchcls" / "recipes"
    recipes = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml"))
    assert "main.yaml" in recipes and "original/cifar10-resnet110.yaml" in recipes
    assert {f"torchcls/recipes/{r}" for r in recipes} <= names
    assert not any(n.startswith(("tests/", "recipes/", "src/")) for n in names)


def test_fresh_environment_imports_the_installed_wheel(fresh):
    out = _in_fresh(
        fresh,
        fresh["python"],
        "-c",
        "import json, sys, torch, torchcls, torchcls.config as c; "
        "print(json.dumps([torchcls.__file__, str(c.find_recipe('main')), c.list_recipes(), sys.path]))",
    )
    module, main_recipe, recipes, path = json.loads(out)
    assert Path(module).is_relative_to(fresh["dir"]), f"torchcls imported from {module}, not the fresh venv"
    assert not Path(module).is_relative_to(ROOT)
    assert str(SRC) not in path  # the editable install's .pth in the project venv was not run
    assert Path(main_recipe).is_relative_to(fresh["dir"])
    assert "main" in [name for name, _ in recipes]


def test_installed_command_version_and_recipes(fresh):
    torchcls = fresh["bin"] / "torchcls"
    assert _in_fresh(fresh, torchcls, "--version").startswith("torchcls ")
    out = _in_fresh(fresh, torchcls, "recipes")
    lines = out.splitlines()
    recipes = json.loads(
        _in_fresh(
            fresh, fresh["python"], "-c", "import json, torchcls.config as c; print(json.dumps(c.list_recipes()))"
        )
    )
    assert len(lines) >= len(recipes) > 0
    for name, description in recipes:
        line = next((ln for ln in lines if ln.split() and ln.split()[0] == name), None)
        assert line is not None, f"`torchcls recipes` does not list {name}:\n{out}"
        assert description in line


@needs_fmnist
def test_installed_command_trains_the_main_recipe(fresh):
    run_dir = fresh["cwd"] / "run"
    torchcls = fresh["bin"] / "torchcls"
    _in_fresh(
        fresh,
        torchcls,
        "train",
        "--recipe",
        "main",
        "--train-subset",
        "2000",
        "--epochs",
        "1",
        "-c",
        run_dir,
        timeout=600,
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 1
