"""Nothing of TensorFlow's logging reaches the user, from the Python API or the magics.

Each case runs in a fresh interpreter (TensorFlow configures its logging once, on first
import) with ``sys.ps1`` set, as in a Jupyter kernel: TensorFlow then logs at INFO on
stdout, which printed ``INFO:tensorflow:Assets written to: /tmp/...`` once per converted
variant. Its C++ start-up lines (absl: ``I0000 ... port.cc:153] oneDNN ...``) go to file
descriptor 2, which a kernel forwards into the notebook, so both of the process's
streams are checked. Real TensorFlow, real conversion, real IPython shell.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ipytinyml

HERE = str(Path(ipytinyml.__file__).resolve().parent.parent)  # this checkout's package
NOISE = re.compile(r"INFO:tensorflow|WARNING:tensorflow|ERROR:tensorflow|absl|"
                   r"^[IWEF]\d{4} \d\d:\d\d:\d\d|oneDNN|cuda|cpu_feature_guard", re.M | re.I)

API = """
import sys
sys.ps1 = ">>> "  # interactive, as in a kernel
import ipytinyml as tm
tm.train(name="hp", root="tinyml", epochs=5)
tm.quantize(name="hp", root="tinyml", variants=["float32", "int8"])
print("done")
"""

MAGICS = """
import sys
sys.ps1 = ">>> "
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "ipytinyml")
shell.run_cell("%tinyml_train --name hp --epochs 5").raise_error()
shell.run_cell("%tinyml_quantize").raise_error()
print("done")
"""


def run_fresh(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user has it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.mark.parametrize("code", [API, MAGICS], ids=["api", "magics"])
def test_no_tensorflow_logging_in_a_fresh_interactive_process(code, tmp_path):
    run = run_fresh(code, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "done" in run.stdout
    noise = NOISE.findall(run.stdout) + NOISE.findall(run.stderr)
    assert not noise, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert (tmp_path / "tinyml" / "hp" / "model_int8.tflite").is_file()


def test_the_logger_levels_are_restored_after_a_call(tmp_path):
    """A user's own TensorFlow logging is as TensorFlow set it up, before and after our calls."""
    code = """
import logging, sys
sys.ps1 = ">>> "
import tensorflow
before = logging.getLogger("tensorflow").level
import ipytinyml as tm
tm.train(name="hp", root="tinyml", epochs=2)
print("levels", before, logging.getLogger("tensorflow").level)
"""
    run = run_fresh(code, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    levels = next(line for line in run.stdout.splitlines() if line.startswith("levels")).split()
    assert levels[1] == levels[2] == str(20), run.stdout  # INFO, as TensorFlow sets it when interactive
