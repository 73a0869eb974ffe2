"""Assemble a complete Arduino sketch folder for a model.

A sketch folder holds the rendered ``.ino``, the protocol files copied from
``firmware_templates/common/`` and the model files generated for the chosen
runtime. The folder is written beside its final place and swapped in whole,
so a failed generation never leaves a mix of old and new files.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from ..errors import ConvertError
from ..quant import ModelPlan

COMMON_FILES = ("tinyml_port.h", "tinyml_protocol.h", "tinyml_protocol.cpp")


def templates_dir() -> Path:
    """``firmware_templates/`` of a source checkout, or the copy installed in the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "firmware_templates", here.parent / "firmware_templates"):
        if candidate.is_dir():
            return candidate
    raise ConvertError("firmware_templates/ not found; reinstall ipytinyml")


def _render(template: Path, **values) -> str:
    import jinja2
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             loader=jinja2.FileSystemLoader(str(template.parent)))
    return env.get_template(template.name).render(**values)


def render_native_sketch(plan: ModelPlan, folder: Path, *, sketch_name: str, board_name: str,
                         model_hash: str, input_label: str, output_label: str) -> Path:
    """Write ``folder/<sketch_name>/`` (replacing it whole) and return that path."""
    from .native import generate_native

    templates = templates_dir()
    target = Path(folder) / sketch_name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sketch_name}.", dir=target.parent))
    try:
        for name in COMMON_FILES:
            shutil.copyfile(templates / "common" / name, staging / name)
        ino = _render(templates / "native" / "sketch.ino.j2", board_name=board_name,
                      sketch_name=sketch_name, model_hash=model_hash)
        (staging / f"{sketch_name}.ino").write_text(ino)
        generate_native(plan, staging, model_hash=model_hash, input_label=input_label,
                        output_label=output_label)
        old = target.with_name(f".{sketch_name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def folder_digest(folder: Path, *extra: str) -> str:
    """A hash of every file in a sketch folder (names and bytes), for build caching."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part.encode() + b"\0")
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
