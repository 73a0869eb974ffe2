"""The package as a pip user gets it: a wheel built from this checkout, installed (not
editable) into a fresh venv, used from an empty folder outside the checkout.

Real parts: real pip (wheel build and install), a real venv, a real IPython shell running
the four magics, the real AVR build and the virtual Uno in simavr. The venv sees the site
packages of the Python running the tests (the system's, or scripts/setup's .venv), after
its own, so TensorFlow and the rest come from there (the test checks that ``ipytinyml``
itself, its firmware templates and its example notebooks come from the venv).

The wheel is built with ``--no-build-isolation`` when this Python has setuptools >= 77 (the
first that reads the SPDX license string), else pip builds it in isolation and fetches
setuptools from PyPI (or its cache), as ``pip install`` of the sdist would.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "ipytinyml", "firmware_templates",
           "examples")

CHAIN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import ipytinyml
    from ipytinyml.codegen import template_root
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    def cell(source):
        result = shell.run_cell(source)
        result.raise_error()
        return result.result
    cell("%load_ext ipytinyml")
    cell("%config TinyMLMagics.verbose = False")
    cell("%tinyml_train --data autompg --features horsepower --label mpg --name hp_mpg --epochs 300")
    cell("%tinyml_quantize")
    cell("%tinyml_flash --board sim")
    predicted = cell("%tinyml_predict 130")
    evaluated = cell("%tinyml_predict --test")
    print(json.dumps({"package": ipytinyml.__file__, "templates": str(template_root()),
                      "parity": evaluated.parity, "predict": str(predicted)}))
""")


def _setuptools_reads_spdx() -> bool:
    try:
        from importlib.metadata import version
        return int(version("setuptools").split(".")[0]) >= 77
    except Exception:  # noqa: BLE001 - no setuptools, or an odd version string
        return False


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert run.returncode == 0, f"{' '.join(map(str, cmd))}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout's sources (no build/ left in the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copyfile(path, src / name)
    isolation = ["--no-build-isolation"] if _setuptools_reads_spdx() else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
          *isolation, "-w", str(work / "dist"), str(src)], timeout=300)
    (found,) = (work / "dist").glob("ipytinyml-*.whl")
    return found


def test_the_wheel_ships_license_examples_and_firmware(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    for needed in ("ipytinyml/example_notebooks/autompg_virtual_board.ipynb",
                   "ipytinyml/example_notebooks/bring_your_own_data.ipynb",
                   "ipytinyml/example_notebooks/data/greenhouse.csv",
                   "ipytinyml/firmware_templates/common/tinyml_protocol.cpp",
                   "ipytinyml/toolchain/simavr_harness.c", "ipytinyml/datasets/auto-mpg.data"):
        assert needed in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Dist: tensorflow==" not in metadata  # a range: a user's TensorFlow stays


def test_installed_wheel_runs_the_chain_to_parity_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    # not --system-site-packages: from a venv that means the base Python's, not this one's
    inner = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    outer = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (Path(inner) / "_test_outer_site.pth").write_text("\n".join(outer) + "\n")
    # --force-reinstall: the system may hold an (editable) ipytinyml of the same version
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
          "--no-index", "--force-reinstall", str(wheel)], timeout=300)
    empty = tmp_path / "user"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IPYTINYML_ARDUINO_CLI")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"

    copied = _run([str(python), "-m", "ipytinyml.examples", "notebooks"], cwd=empty, env=env, timeout=120)
    assert (empty / "notebooks" / "autompg_virtual_board.ipynb").is_file(), copied.stdout
    assert (empty / "notebooks" / "data" / "greenhouse.csv").is_file()

    run = _run([str(python), "-c", CHAIN], cwd=empty, env=env, timeout=600)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).resolve().is_relative_to(venv.resolve()), result["package"]
    assert Path(result["templates"]).resolve().is_relative_to(venv.resolve()), result["templates"]
    parity = result["parity"]
    assert parity["total"] > 0 and parity["matched"] == parity["total"], parity
    assert parity["raw_matched"] == parity["raw_total"] == 256, parity
    assert (empty / "tinyml" / "hp_mpg" / "report.json").is_file()
