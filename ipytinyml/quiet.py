"""Keep TensorFlow's own logging out of the notebook (and out of a script's terminal).

TensorFlow talks on two channels while ipytinyml trains and converts:

- C++ (absl) lines on file descriptor 2 while it loads (oneDNN, CUDA probes, "All log
  messages before absl::InitializeLog()"). ``TF_CPP_MIN_LOG_LEVEL`` does not stop them
  (TF 2.21), and a Jupyter kernel forwards fd 2 into the cell's output.
- Python logging: in an interactive session (``sys.ps1`` set, as in a kernel) TensorFlow
  sets its ``tensorflow`` logger to INFO with a handler on stdout, so every SavedModel
  export of the converter prints ``INFO:tensorflow:Assets written to: /tmp/...``.

:func:`tensorflow_quiet` (a decorator for the API functions that use TensorFlow) diverts
fd 2 for the call and raises the ``tensorflow`` and ``absl`` loggers to ERROR during it,
restoring their levels afterwards, so a user's own TensorFlow code logs as it would have.
If the call fails with anything but a ``TinyMLError`` (a bug), what was diverted is
written back to ``sys.stderr``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile

__all__ = ["tensorflow_quiet", "quieted"]

LOGGERS = ("tensorflow", "absl")


@contextlib.contextmanager
def fd2_diverted():
    """Divert file descriptor 2 (native code's stderr) for the block. If the block raises
    anything but a ``TinyMLError``, what was diverted is written back to ``sys.stderr``, so
    nothing useful for debugging a bug is lost."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 to divert
        yield
        return
    from .errors import TinyMLError

    sink = tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)
    failed = False
    try:
        yield
    except TinyMLError:  # a user error: its one line says it all
        raise
    except Exception:  # a bug: keep whatever native code said
        failed = True
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if failed:
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                print(text, file=sys.stderr)
        sink.close()


@contextlib.contextmanager
def quieted():
    """TensorFlow imported and silent for the duration of the block (see the module doc)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with fd2_diverted():
        # TensorFlow configures its logger once, on import: import it first, then override.
        try:
            import tensorflow  # noqa: F401
        except ImportError:  # the call itself says what to install
            pass
        loggers = [logging.getLogger(name) for name in LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def tensorflow_quiet(function):
    """Run ``function`` inside :func:`quieted`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with quieted():
            return function(*args, **kwargs)

    return wrapper
