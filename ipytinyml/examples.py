"""The example notebooks, for a pip install as much as a clone.

The wheel ships ``examples/`` (the notebooks and their ``data/`` folder) inside the
package; a checkout uses the repository's own folder. Copy them somewhere to open them::

    python -m ipytinyml.examples              # into ./ipytinyml-examples
    python -m ipytinyml.examples ~/notebooks  # or any folder

or from Python: ``ipytinyml.copy_examples("ipytinyml-examples")``.
Existing files are never overwritten (they are listed as skipped).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import TinyMLError

__all__ = ["examples_dir", "copy_examples", "DEFAULT_DEST"]

DEFAULT_DEST = "ipytinyml-examples"
_PACKAGED = "example_notebooks"  # the wheel's name for the repository's examples/


def examples_dir() -> Path:
    """The folder holding the example notebooks (installed package, else the checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / _PACKAGED, here.parent / "examples"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    raise TinyMLError(f"the example notebooks are not next to {here}; reinstall ipytinyml")


def copy_examples(dest: str | os.PathLike = DEFAULT_DEST) -> list[Path]:
    """Copy the example notebooks and their data into ``dest`` (created if needed).

    Returns the files written; files already in ``dest`` are left as they are.

    Examples
    --------
    >>> import ipytinyml
    >>> ipytinyml.copy_examples("my-examples")  # doctest: +SKIP
    [PosixPath('my-examples/autompg_virtual_board.ipynb'), ...]
    """
    source, target = examples_dir(), Path(dest).expanduser()
    written = []
    try:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".py":
                continue
            out = target / path.relative_to(source)
            if out.exists():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
            written.append(out)
    except OSError as exc:
        raise TinyMLError(f"cannot copy the examples to {target}: {exc.strerror or exc}") from exc
    return written


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(__doc__.strip().splitlines()[0] + "\n\nusage: python -m ipytinyml.examples [DEST]  "
              f"(default: ./{DEFAULT_DEST})")
        return 0 if args and args[0] in ("-h", "--help") else 2
    dest = Path(args[0] if args else DEFAULT_DEST)
    try:
        written = copy_examples(dest)
    except TinyMLError as exc:
        print(f"ipytinyml.examples: {exc}", file=sys.stderr)
        return 1
    skipped = sum(1 for p in examples_dir().rglob("*") if p.is_file() and p.suffix != ".py"
                  and "__pycache__" not in p.parts) - len(written)
    print(f"copied {len(written)} file(s) to {dest}" + (f" ({skipped} already there, kept)" if skipped else ""))
    for notebook in sorted(dest.glob("*.ipynb")):
        print(f"  jupyter lab {notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
