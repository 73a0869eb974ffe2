"""What a pip user meets first: the example notebooks copied out of the package, magic
options read like a shell reads them, and the virtual board's needs named all at once.

Real parts: ``python -m ipytinyml.examples`` in a subprocess, the real package data (the
checkout's examples/ here, the wheel's copy in tests/test_wheel.py), the real PATH lookups.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import ipytinyml
from ipytinyml.errors import ToolchainError
from ipytinyml.magics import split_line

HERE = str(Path(ipytinyml.__file__).resolve().parent.parent)


def examples_cli(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "ipytinyml.examples", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_examples_module_copies_the_notebooks_and_their_data(tmp_path):
    run = examples_cli(cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    dest = tmp_path / "ipytinyml-examples"
    notebooks = sorted(p.name for p in dest.glob("*.ipynb"))
    assert notebooks == ["autompg_origin_classifier.ipynb", "autompg_virtual_board.ipynb",
                         "bring_your_own_data.ipynb"]
    assert (dest / "data" / "greenhouse.csv").read_bytes() == \
        (Path(HERE) / "examples" / "data" / "greenhouse.csv").read_bytes()
    assert "copied 4 file(s)" in run.stdout and "jupyter lab" in run.stdout


def test_examples_module_never_overwrites_a_users_file(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "autompg_virtual_board.ipynb").write_text("my edits")
    run = examples_cli(str(dest), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (dest / "autompg_virtual_board.ipynb").read_text() == "my edits"
    assert (dest / "bring_your_own_data.ipynb").is_file()
    assert "1 already there, kept" in run.stdout


def test_examples_module_errors_are_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    run = examples_cli(str(blocker), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "cannot copy the examples" in run.stderr, run.stderr
    assert examples_cli("a", "b", cwd=tmp_path).returncode == 2


def test_copy_examples_from_python(tmp_path):
    written = ipytinyml.copy_examples(tmp_path / "ex")
    assert {p.name for p in written} == {"autompg_origin_classifier.ipynb", "autompg_virtual_board.ipynb",
                                         "bring_your_own_data.ipynb",
                                         "greenhouse.csv"}
    assert ipytinyml.copy_examples(tmp_path / "ex") == []


@pytest.mark.parametrize("line, words", [
    ("--name 'a b'", ["--name", "a b"]),
    ('--features "model_year, cylinders" --label mpg', ["--features", "model_year, cylinders", "--label", "mpg"]),
    ("--name='x y'", ["--name=x y"]),
    (r"--data C:\data\cars.csv", ["--data", r"C:\data\cars.csv"]),  # backslashes are not escapes
    ("--data my#file.csv", ["--data", "my#file.csv"]),  # '#' is not a comment
    ("", []),
])
def test_magic_options_are_split_like_a_shell(line, words):
    assert split_line(line) == words


@pytest.mark.parametrize("line", ['--features "model_year', "--name 'a", "130 '150"])
def test_an_unmatched_quote_is_one_usage_error(line):
    with pytest.raises(UsageError, match="unmatched quote") as info:
        split_line(line)
    assert "\n" not in str(info.value)


def test_the_virtual_board_names_every_missing_package_at_once(tmp_path):
    """Before, the compilers were named first and, once installed, gcc for the simulator (and
    avrdude, which uploads to the virtual optiboot, on the way)."""
    from ipytinyml.toolchain.sim import check_virtual_board

    empty = tmp_path / "bin"
    empty.mkdir()
    check_virtual_board()  # this machine has them all
    with pytest.raises(ToolchainError) as info:
        check_virtual_board(path=str(empty))
    message = str(info.value)
    for package in ("arduino-builder", "arduino-ctags", "gcc-avr", "binutils-avr", "gcc", "avrdude"):
        assert f" {package}" in message
    assert "apt-get install -y arduino-builder arduino-ctags gcc-avr binutils-avr gcc avrdude" in message
    assert "\n" not in message
