"""Assemble a complete Arduino sketch folder for a model.

A sketch folder holds the rendered ``.ino``, the protocol files copied from
``firmware_templates/common/`` and the model files generated for the chosen
runtime (``native`` here, ``tflm`` in ``tflm.py``). The folder is written
beside its final place and swapped in whole, so a failed generation never
leaves a mix of old and new files.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from typing import Callable

from ..prestage import InputStage
from ..quant import ModelPlan
from . import input_stage_for, render, template_root

COMMON_FILES = ("tinyml_port.h", "tinyml_protocol.h", "tinyml_protocol.cpp")


def copy_common(out_dir: Path) -> list[Path]:
    """Copy the protocol files every sketch shares into ``out_dir``."""
    written = []
    for name in COMMON_FILES:
        shutil.copyfile(template_root() / "common" / name, Path(out_dir) / name)
        written.append(Path(out_dir) / name)
    return written


def write_sketch_folder(folder: Path, sketch_name: str, fill: Callable[[Path], object]) -> Path:
    """Have ``fill`` write a sketch into a staging folder, then swap it in as ``folder/<sketch_name>``."""
    target = Path(folder) / sketch_name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sketch_name}.", dir=target.parent))
    old = target.with_name(f".{sketch_name}.old")
    try:
        fill(staging)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def render_native_sketch(plan: ModelPlan, folder: Path, *, sketch_name: str, board_name: str,
                         model_hash: str, input_label: str, output_label: str,
                         stage: InputStage | None = None, classes=None) -> Path:
    """Write ``folder/<sketch_name>/`` for the native runtime (replacing it whole).

    ``stage`` is the input pre-stage the board applies to typed values (None:
    the identity stage, plain QUANTIZE); ``model_hash`` is reported as given;
    ``classes``: a classifier's class names (None: a regression).
    """
    from .native import generate_native

    stage = input_stage_for(plan, stage)  # refused before anything is written

    def fill(staging: Path) -> None:
        copy_common(staging)
        ino = render("native/sketch.ino.j2", {"board_name": board_name, "sketch_name": sketch_name,
                                               "model_hash": model_hash},
                     model_hash=model_hash)
        (staging / f"{sketch_name}.ino").write_text(ino)
        generate_native(plan, staging, model_hash=model_hash, input_label=input_label,
                        output_label=output_label, stage=stage, classes=classes)

    return write_sketch_folder(folder, sketch_name, fill)


def folder_digest(folder: Path, *extra: str) -> str:
    """A hash of every file in a sketch folder (names and bytes), for build caching."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part.encode() + b"\0")
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
