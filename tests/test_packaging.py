"""The project as a new machine sees it: nothing in the repository shadows a dependency when the root is
on ``sys.path``, and the wheel holds every module and runs its command outside the repository."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The folders that ship, and the import name each maps to (``pyproject.toml``'s package discovery).
PACKAGE_ROOTS = {REPO: "ernievil_ds", REPO / "kernels": "ernievil_ds_kernels"}


def run(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``command`` in ``cwd`` with no PYTHONPATH; a failure shows its output."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def project_modules() -> list[str]:
    """Every module of the source tree, as the dotted names a user imports."""
    modules = []
    for root, package in PACKAGE_ROOTS.items():
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_the_kernels_import_name_is_not_shadowed_from_the_repository_root():
    """``python -c`` puts the current folder first on ``sys.path``, as ``python -m pytest`` does: there
    ``kernels`` is the PyPI distribution that transformers imports, and transformers loads."""
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the PyPI distribution 'kernels' is not installed here, so there is nothing to shadow")
    probe = (
        "import importlib.util, json\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "from transformers import PreTrainedModel\n"
        "print(json.dumps([spec.origin, list(spec.submodule_search_locations or [])]))\n"
    )
    origin, locations = json.loads(run([sys.executable, "-c", probe], cwd=REPO).stdout.splitlines()[-1])
    for place in [origin, *locations]:
        assert place is not None and not Path(place).resolve().is_relative_to(REPO), (
            f"'import kernels' from the repository root resolves to {place}, inside the repository"
        )


def test_every_module_is_found_in_the_source_tree():
    """The list the wheel test imports is the whole project, kernels included."""
    modules = project_modules()
    assert {"ernievil_ds.cli", "ernievil_ds.finetuning.tasks", "ernievil_ds_kernels.co_attention"} <= set(
        modules
    )


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_runs_its_command(tmp_path):
    """Build the wheel from a copy of the sources, install it alone into a fresh venv that borrows this
    environment's dependencies, and from outside the repository import every module and run
    ``ernievil-ds --help``."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for root, package in PACKAGE_ROOTS.items():
        shutil.copytree(root / package, source / root.relative_to(REPO) / package, ignore=ignore)
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
         str(source)], cwd=tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("ernievil_ds-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp_path).stdout.strip())  # fmt: skip
    # This environment's packages, after the wheel's: its .pth files (an editable install of this
    # checkout among them) are not read from there, so the project itself comes from the wheel only.
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_environment.pth").write_text("\n".join(sorted(dependencies)) + "\n")

    importer = (
        "import importlib, json, sys\n"
        "modules = json.loads(sys.argv[1])\n"
        "files = [importlib.import_module(name).__file__ for name in modules]\n"
        "print(json.dumps(files))\n"
    )
    modules = project_modules()
    result = run([str(python), "-c", importer, json.dumps(modules)], cwd=tmp_path)
    files = json.loads(result.stdout.splitlines()[-1])
    outside = [name for name, file in zip(modules, files) if not Path(file).is_relative_to(site)]
    assert not outside, f"imported from outside the installed wheel: {outside}"
    help_text = run([str(venv / "bin" / "ernievil-ds"), "--help"], cwd=tmp_path).stdout
    assert "convert-paddle" in help_text
