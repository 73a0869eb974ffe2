"""One pre-trained artifacts folder per test process, copied per case; hashing whole folders."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

NAME = "hp_mpg"
EPOCHS = 30  # full-batch steps: a rough fit; these tests need real files, not a good model

_pretrained: dict[str, Path] = {}


def pretrained(tmp_path_factory, *, flashed: bool = False) -> Path:
    """A root holding ``hp_mpg`` trained and quantized (float32 + int8), made once per process.

    ``flashed=True``: also its Uno sketch generated and built for the virtual board (the build
    cache is then warm in every copy).
    """
    key = "flashed" if flashed else "quantized"
    if key in _pretrained:
        return _pretrained[key]
    import ipytinyml as tm
    from ipytinyml import artifacts, deploy

    base = pretrained(tmp_path_factory) if flashed else None
    root = tmp_path_factory.getbasetemp() / f"hardening-{key}"
    if base is not None:
        shutil.copytree(base, root, symlinks=True)
        sketch, _, _ = deploy.generate(NAME, root)
        deploy.build(sketch, artifacts.model_dir(root, NAME) / "build" / "sim")
    else:
        tm.train(name=NAME, root=root, epochs=EPOCHS)
        tm.quantize(name=NAME, root=root)
    _pretrained[key] = root
    return root


def copy_root(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def digests(folder: Path) -> dict[str, str]:
    """Every file and symlink under ``folder``, by relative path: its sha256 (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
