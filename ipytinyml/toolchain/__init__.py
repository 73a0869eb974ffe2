"""External tools: arduino-cli for real boards (``arduino_cli``, ``discovery``),
arduino-builder and simavr for the virtual Uno (``avr_build``, ``sim``).

Nothing is imported here, so ``import ipytinyml.toolchain`` stays instant.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Per-user cache: ``$XDG_CACHE_HOME/ipytinyml``, else ``~/.cache/ipytinyml``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ipytinyml"
