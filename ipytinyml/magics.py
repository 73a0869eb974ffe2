"""IPython magics: train, quantize, flash and query a TinyML model from a notebook.

Load with ``%load_ext ipytinyml``, then::

    %%tinyml_train --data autompg --features horsepower --label mpg --name hp_mpg
    %tinyml_quantize                 # float32 + int8, with the test MAE of each
    %tinyml_flash                    # a connected board, or else the virtual Uno (simavr)
    %tinyml_predict 130 150          # through the board, next to the notebook's own answer
    %tinyml_predict --test           # the whole test set: MAE, bit-exact parity, latency
    %tinyml_predict --widget         # a slider wired to the board

``--name`` defaults to the last model, so after the first cell the magics need
no arguments. Each magic's help is ``%tinyml_flash?``. Settings live on the
``TinyMLMagics`` configurable (``%config TinyMLMagics`` lists them)::

    %config TinyMLMagics.board = "sim"     # default --board
    %config TinyMLMagics.root = "tinyml"   # artifacts folder
    %config TinyMLMagics.tracebacks = True # show full tracebacks instead of one-line errors

This module is glue only: every magic parses its arguments, calls the plain
API (``ipytinyml.api``), shows progress and returns a result object (see
``ipytinyml.views``). Problems the user can fix (``TinyMLError``) become a
one-line ``UsageError``. Loading the extension imports nothing heavy and
touches no serial port.
"""
from __future__ import annotations

import ast
import atexit
import difflib
import functools
import inspect
import math
import re
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments
from traitlets import Bool, Int, TraitError, Unicode, validate

from .errors import LinkError, TinyMLError

__all__ = ["TinyMLMagics", "load_ipython_extension", "unload_ipython_extension"]

KNOWN_BOARDS = ("auto", "sim", "uno", "nano33ble")
RUNTIMES = ("native", "tflm")
VARIANTS = ("float32", "float16", "dynamic", "int8")
_FQBN = re.compile(r"^(?!-)[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+(:[A-Za-z0-9_.=,-]+)?\Z")
_BODY_FILE = "<%%tinyml_train body>"
_FLOAT32_MAX = 3.4028234663852886e38


def check_board(value: str) -> str:
    """A known board name or a full FQBN (``vendor:arch:board``); a close match is suggested."""
    value = str(value).strip()
    if value in KNOWN_BOARDS or _FQBN.match(value):
        return value
    close = difflib.get_close_matches(value.lower(), KNOWN_BOARDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else \
        f"choose {', '.join(KNOWN_BOARDS)} or a full FQBN such as arduino:avr:uno"
    raise TinyMLError(f"unknown board {value!r}", hint=hint)


def _user_errors(method):
    """Turn a ``TinyMLError`` into a one-line ``UsageError`` (unless ``tracebacks`` is on)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except TinyMLError as exc:
            if self.tracebacks:
                raise
            raise UsageError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def _cleandoc(func):
    """Dedent a magic's docstring so magic_arguments' help keeps its paragraphs."""
    func.__doc__ = inspect.cleandoc(func.__doc__ or "")
    return func


def split_line(line: str) -> list[str]:
    """The magic's line as words, the way a shell reads them: quotes group and are removed
    (``--name 'a b'`` is ``a b``), backslashes stay (``C:\\data\\cars.csv``), ``#`` is no comment.

    An unmatched quote raises a one-line ``UsageError``.
    """
    lexer = shlex.shlex(line or "", posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    try:
        return list(lexer)
    except ValueError as exc:  # shlex: "No closing quotation"
        raise UsageError(f"the options have an unmatched quote ({exc}): {(line or '').strip()}") from None


def parse_line(magic, line: str):
    """``parse_argstring`` with :func:`split_line`'s quoting (IPython keeps quotes and raises a
    ValueError traceback on an unmatched one); argparse's errors are already UsageErrors."""
    return magic.parser.parse_args(split_line(line))


def _columns(words: list[str]) -> list[str]:
    """Column names given as separate words, joined by commas, or both."""
    return [name.strip() for word in words for name in word.split(",") if name.strip()]


def _wants_help(line: str) -> bool:
    try:
        words = split_line(line)
    except UsageError:
        return False
    return "-h" in words or "--help" in words


def _floats(words) -> list[float]:
    values = []
    for word in words:
        for part in str(word).replace(",", " ").split():
            try:
                value = float(part)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                raise TinyMLError(f"{part!r} is not a number; give input values such as "
                                  "%tinyml_predict 130 150")
            if abs(value) > _FLOAT32_MAX:
                raise TinyMLError(f"{part} is beyond float32 range; the model takes float32 inputs")
            values.append(value)
    return values


@magics_class
class TinyMLMagics(Magics):
    """The ipytinyml magics; its traits are the settings ``%config TinyMLMagics`` shows."""

    board = Unicode("auto", help="Default --board of %tinyml_flash: 'auto' (a connected board, "
                    "else the virtual Uno), 'sim', 'uno', 'nano33ble' or a full FQBN.").tag(config=True)
    port = Unicode("", help="Default serial port of a real board ('' = discover it).").tag(config=True)
    baud = Int(115200, help="Serial speed of the board in baud. The generated sketches run at "
               "115200; kept for boards flashed elsewhere (tm.flash has no baud parameter yet).").tag(
        config=True)
    root = Unicode("tinyml", help="Folder holding one artifacts folder per model "
                   "(<root>/<name>/: model, .tflite files, sketch, build, report.json).").tag(config=True)
    verbose = Bool(True, help="Show live progress while training, converting, building and "
                   "streaming.").tag(config=True)
    tracebacks = Bool(False, help="Show the full traceback of errors instead of one line "
                      "(for debugging ipytinyml itself).").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._board = None
        self._flashed = None  # sha256 of the int8 model the board was flashed with

    # -- settings --------------------------------------------------------------------------
    @validate("board")
    def _valid_board(self, proposal):
        try:
            return check_board(proposal["value"])
        except TinyMLError as exc:
            raise TraitError(f"TinyMLMagics.board: {exc}") from None

    @validate("baud")
    def _valid_baud(self, proposal):
        value = proposal["value"]
        if not 300 <= value <= 4_000_000:
            raise TraitError(f"TinyMLMagics.baud must be between 300 and 4000000, not {value}")
        return value

    @validate("root")
    def _valid_root(self, proposal):
        value = proposal["value"].strip()
        if not value:
            raise TraitError("TinyMLMagics.root must name a folder, e.g. 'tinyml'")
        return value

    @validate("port")
    def _valid_port(self, proposal):
        return proposal["value"].strip()

    # -- plumbing --------------------------------------------------------------------------
    @property
    def current_board(self):
        """The board the last ``%tinyml_flash`` connected (None before it)."""
        return self._board

    def close_board(self) -> None:
        """Close the connected board's serial link (the virtual Uno itself keeps running, with its sketch)."""
        board, self._board, self._flashed = self._board, None, None
        if board is not None:
            from .widgets import board_lock
            with board_lock(board):
                try:
                    board.close()
                except Exception:  # noqa: BLE001 - closing must never fail a cell
                    pass

    def _progress(self, title: str):
        from .progress import Progress
        return Progress(title, enabled=self.verbose)

    def _data(self, name: str):
        """``--data``: 'autompg', a CSV path, or the name of a DataFrame in the user namespace."""
        ns = self.shell.user_ns if self.shell is not None else {}
        if name.isidentifier() and name in ns and name.lower() != "autompg":
            value = ns[name]
            import pandas as pd
            if isinstance(value, pd.DataFrame):
                return value
            from pathlib import Path
            if not Path(name).exists():
                raise TinyMLError(f"{name!r} in your namespace is a {type(value).__name__}, not a pandas "
                                  "DataFrame; pass a DataFrame's name, a CSV path or 'autompg'")
        return name

    def _run_body(self, cell: str):
        """Run a ``%%tinyml_train`` body in the user namespace; return the ``model`` it defines.

        Returns None for a body without code (empty, or comments only).
        """
        source = self.shell.transform_cell(cell)
        try:
            tree = ast.parse(source, filename=_BODY_FILE)
        except SyntaxError as exc:
            if self.tracebacks:
                raise
            raise TinyMLError(f"the cell body has a syntax error: {exc.msg} (line {exc.lineno})") from exc
        if not tree.body:
            return None
        ns = self.shell.user_ns
        missing = object()
        previous = ns.pop("model", missing)
        try:
            exec(compile(tree, _BODY_FILE, "exec"), ns)  # noqa: S102 - the user's own cell
        except Exception as exc:
            if "model" not in ns and previous is not missing:
                ns["model"] = previous
            if self.tracebacks:
                raise
            line = None
            tb = exc.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == _BODY_FILE:
                    line = tb.tb_lineno
                tb = tb.tb_next
            where = f" (line {line})" if line else ""
            message = " ".join(str(exc).split())
            raise TinyMLError(f"the cell body raised {type(exc).__name__}"
                              f"{': ' + message if message else ''}{where}") from exc
        if "model" not in ns:
            if previous is not missing:
                ns["model"] = previous
            raise TinyMLError("the cell body must define `model` (a keras.Model), e.g. "
                              "model = keras.Sequential([...]); leave the body empty to train the "
                              "default model")
        return ns["model"]

    def _int8_digest(self, name: str) -> str:
        from . import api, artifacts
        return artifacts.sha256(api.tflite_path(name, self.root, "int8").read_bytes())

    def _require_board(self, name: str | None):
        """The connected board, checked to run the current int8 model of its model name."""
        board = self._board
        if board is None:
            raise LinkError("no board connected; run %tinyml_flash first")
        if name is not None and name != board.name:
            raise LinkError(f"the board runs {board.name!r}, not {name!r}; run "
                            f"%tinyml_flash --name {name} first")
        if self._flashed is not None and self._int8_digest(board.name) != self._flashed:
            raise LinkError(f"the board runs an older build of {board.name!r} (it was quantized "
                            "again since); run %tinyml_flash again")
        return board

    # -- magics ----------------------------------------------------------------------------
    @line_cell_magic
    @_user_errors
    @magic_arguments()
    @kwds(epilog="""
Examples
--------
::

  In [1]: %%tinyml_train --data autompg --features horsepower --label mpg --name hp_mpg
     ...: # no code: the default model

  In [2]: %%tinyml_train --data cars.csv --features weight,horsepower --label mpg --name cars
     ...: import keras
     ...: model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="relu"),
     ...:                           keras.layers.Dense(1)])

  In [3]: %tinyml_train --data df --features x --label y --name mine --epochs 300
""")
    @argument("--data", default="autompg", metavar="DATA",
              help="'autompg' (bundled), a CSV path, or the name of a pandas DataFrame in the "
                   "notebook (default: %(default)s).")
    @argument("--features", nargs="+", default=["horsepower"], metavar="COLUMN",
              help="Numeric input columns, separated by commas or spaces; quote a name that "
                   "holds spaces: --features \"temp (C)\" humidity (default: horsepower).")
    @argument("--label", nargs="+", default=["mpg"], metavar="COLUMN",
              help="The numeric column to predict, or several (commas or spaces); a classifier's "
                   "column of classes (default: mpg).")
    @argument("--task", choices=("regression", "classification"), default=None,
              help="regression or classification (default: classification when the label is text "
                   "or bool, else regression).")
    @argument("--name", default="hp_mpg",
              help="Model name, a plain identifier; artifacts go to <root>/<name>/ "
                   "(default: %(default)s).")
    @argument("--epochs", type=int, default=None, metavar="N",
              help="Training length (default: 1000 full-batch steps for the default model, "
                   "100 epochs of fit() for a model you compiled).")
    @argument("--seed", type=int, default=0, metavar="S",
              help="Seeds the train/test split and the weights (default: %(default)s; 0 is the "
                   "TensorFlow tutorial's split).")
    @_cleandoc
    def tinyml_train(self, line, cell=None):
        """Train a small Keras regression model and save it with its data split.

        Loads the data, splits it 80/20 with a seed, trains, and saves the
        model, the split and report.json under <root>/<name>/. As a line
        magic, or with a body of comments only, it trains the default model:
        Normalization -> Dense(64, relu) -> Dense(1) (IPython itself refuses
        a %% cell with nothing under its first line). A body is Python run in
        the notebook's namespace that must define ``model`` (a keras.Model
        taking one input per feature); an uncompiled model gets the fast
        full-batch recipe, a compiled one is trained with its own ``fit``
        settings. Shows live progress, then the split sizes, the test MAE and
        (one feature) a plot of the test data with the model's fit. Returns a
        TrainResult.
        """
        if _wants_help(line):
            print(self.tinyml_train.__doc__)
            return None
        args = parse_line(self.tinyml_train, line)
        from . import api
        from .fitplot import trained_fit_png
        from .quiet import fd2_diverted
        from .views import TrainResult

        features, labels = _columns(args.features), _columns(args.label)
        data = self._data(args.data)
        with fd2_diverted():  # TensorFlow's C++ start-up chatter
            model = self._run_body(cell) if cell and cell.strip() else None
            with self._progress(f"training {args.name}") as bar:
                report = api.train(data=data, features=features, label=labels,
                                   name=args.name, root=self.root, model=model, epochs=args.epochs,
                                   seed=args.seed, task=args.task,
                                   progress=lambda done, total, loss: bar.update(
                                       done, total, f"loss {loss:.3f}"))
                bar.finish(f"done in {bar.elapsed:.1f} s")
            png = trained_fit_png(report["name"], self.root) if len(features) == 1 else None
        return TrainResult(report, seconds=bar.elapsed, epochs=bar.state.total,
                           custom_model=model is not None, plot_png=png)

    @line_magic
    @_user_errors
    @magic_arguments()
    @kwds(epilog="""
Examples
--------
::

  In [1]: %tinyml_quantize
  In [2]: %tinyml_quantize --name hp_mpg --variants float32,float16,dynamic,int8
  In [3]: r = %tinyml_quantize --per-channel
  In [4]: r.int8_vs_float32
""")
    @argument("--name", default=None, help="Model to convert (default: the last model).")
    @argument("--variants", default="float32,int8", metavar="V,W",
              help="Comma-separated, any of float32, float16, dynamic, int8 "
                   "(default: %(default)s).")
    @argument("--per-channel", action="store_true",
              help="int8 with one weight scale per Dense unit (default: per-tensor, which every "
                   "runtime handles; the Arduino TFLM ports mishandle per-channel).")
    @argument("--int8-io", action="store_true",
              help="int8 input/output tensors instead of float32 (default: float I/O).")
    @_cleandoc
    def tinyml_quantize(self, line):
        """Convert the trained model to TFLite and measure every variant on the test set.

        ``int8`` is full-integer quantization (int8 weights and activations,
        integer-only ops) calibrated on the training data; it is what the
        board runs. Each variant's .tflite is saved beside the model and its
        size and test MAE go to report.json; nothing is written unless every
        variant converts. Shows a table of size and test MAE per variant and
        the int8-vs-float32 difference. Returns a QuantizeResult.
        """
        if _wants_help(line):
            print(self.tinyml_quantize.__doc__)
            return None
        args = parse_line(self.tinyml_quantize, line)
        from . import api
        from .quiet import fd2_diverted
        from .views import QuantizeResult

        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        for v in variants:
            if v not in VARIANTS:
                close = difflib.get_close_matches(v, VARIANTS, n=1)
                raise TinyMLError(f"unknown variant {v!r}", hint=f"did you mean {close[0]!r}?" if close
                                  else f"choose from {', '.join(VARIANTS)}")
        name = api.resolve_name(args.name, self.root)
        with fd2_diverted(), self._progress(f"quantizing {name}") as bar:
            report = api.quantize(name=name, root=self.root, variants=variants,
                                  per_channel=args.per_channel, int8_io=args.int8_io,
                                  progress=bar.stage)
            bar.finish()
        return QuantizeResult(report, variants, seconds=bar.elapsed)

    @line_magic
    @_user_errors
    @magic_arguments()
    @kwds(epilog="""
Examples
--------
::

  In [1]: %tinyml_flash                      # a connected board, else the virtual Uno
  In [2]: %tinyml_flash --board sim          # the virtual Uno in simavr
  In [3]: %tinyml_flash --board uno --port /dev/ttyACM0
  In [4]: %tinyml_flash --board nano33ble --runtime tflm
  In [5]: r = %tinyml_flash
  In [6]: r.board.predict([130])
""")
    @argument("--name", default=None, help="Model to deploy (default: the last model).")
    @argument("--board", default=None,
              help="auto, sim, uno, nano33ble or a full FQBN such as arduino:avr:uno "
                   "(default: the TinyMLMagics.board setting, 'auto': a connected board, else "
                   "the virtual Uno).")
    @argument("--port", default=None, metavar="P",
              help="Serial port of a real board (default: the TinyMLMagics.port setting, or "
                   "discovered).")
    @argument("--runtime", default=None, choices=RUNTIMES,
              help="native: plain C generated from the int8 model, any Arduino; tflm: TensorFlow "
                   "Lite Micro, 32-bit boards (default: tflm on the Nano 33 BLE, native "
                   "elsewhere).")
    @_cleandoc
    def tinyml_flash(self, line):
        """Generate, compile and upload the firmware for the int8 model.

        Renders the sketch from the int8 .tflite, builds it (an unchanged
        model reuses the cached build), uploads it to the board (the virtual
        Uno too: through its bootloader, with avrdude), and connects over serial. The board a previous
        %tinyml_flash connected keeps working until the new one is ready (its
        port is released just before an upload), then it is closed; if
        flashing fails, it stays. Shows the stages as they run, then the
        flash and RAM the sketch uses and what the board reports about
        itself. The board stays connected for %tinyml_predict. Returns a
        FlashResult (``r.board`` is the Board).

        The virtual board runs on Linux (tested on Debian 12; Ubuntu has the
        same packages), not on Windows or macOS. It needs the Debian packages
        gcc-avr avr-libc binutils-avr arduino-core-avr arduino-builder
        arduino-ctags libsimavr-dev libelf-dev gcc avrdude; whatever is
        missing is named, all at once, with the apt-get command.
        """
        if _wants_help(line):
            print(self.tinyml_flash.__doc__)
            return None
        args = parse_line(self.tinyml_flash, line)
        from . import api
        from .views import FlashResult

        requested = check_board(args.board if args.board is not None else self.board)
        if args.port is not None and requested in ("sim", "virtual"):
            raise TinyMLError(f"--port {args.port} is for a real board; the virtual board (--board "
                              "sim) makes its own port: drop --port, or choose --board uno|nano33ble")
        port = None if requested == "sim" else (args.port if args.port is not None else self.port) or None
        name = api.resolve_name(args.name, self.root)
        previous = self._board
        notes = []
        with self._progress(f"flashing {name}") as bar:
            def progress(stage):  # stages are single words; a sentence is a note for the user
                (notes.append if " " in str(stage).strip() else bar.stage)(str(stage).strip())
            board = api.flash(name=name, root=self.root, board=requested, port=port,
                              runtime=args.runtime, progress=progress, release=previous)
            self.close_board()  # the previous board (a no-op if the upload released it already)
            self._board = board
            self._flashed = self._int8_digest(name)
            info = board.info()
            bar.finish()
        build = board.build if isinstance(board.build, dict) else {}
        note = build.get("note") or (notes[0] if notes else None)
        if note is None and requested == "auto" and board.kind == "sim":
            note = "No board found: using the virtual Arduino Uno (simavr)."
        return FlashResult(board, requested=requested, note=note, stages=bar.stage_times(),
                           seconds=bar.elapsed, info=info)

    @line_magic
    @_user_errors
    @magic_arguments()
    @kwds(epilog="""
Examples
--------
::

  In [1]: %tinyml_predict 130
  In [2]: %tinyml_predict 90 130 200
  In [3]: r = %tinyml_predict --test
  In [4]: r.parity
  In [5]: %tinyml_predict --widget
""")
    @argument("values", nargs="*", help="Input values, one per feature per row (e.g. 130 150).")
    @argument("--test", action="store_true",
              help="Stream the whole test set through the board: MAE, parity, latency, "
                   "throughput (saved to report.json) and, for a regression, the board's "
                   "prediction against the true value of each row, plotted.")
    @argument("--widget", action="store_true",
              help="A slider per feature wired to the board, with both predictions and a plot "
                   "along the slider last moved (the other features held).")
    @argument("--name", default=None,
              help="Check that the board runs this model (default: whatever it runs).")
    @_cleandoc
    def tinyml_predict(self, line):
        """Ask the board: values, the whole test set, or live from a slider.

        Needs a board from %tinyml_flash. With values, prints one line per
        input: the board's answer, the notebook's own prediction of the same
        int8 model, the on-device time, and whether the two agree bit for bit
        (✓/✗). ``--test`` streams the test set and reports MAE, parity
        (matched/total), device time per inference and predictions per second,
        and plots the board's prediction of each row against its true value.
        ``--widget`` shows a slider per feature; each change (debounced) goes to
        the board, and a plot follows the slider last moved.
        Returns a PredictResult, an EvaluateResult or a BoardSlider.
        """
        if _wants_help(line):
            print(self.tinyml_predict.__doc__)
            return None
        args = parse_line(self.tinyml_predict, line)
        from .artifacts import model_classes, model_columns
        from .views import EvaluateResult, PredictResult
        from .widgets import BoardSlider, board_lock

        chosen = [bool(args.values), args.test, args.widget]
        if sum(chosen) != 1:
            raise TinyMLError("give input values (%tinyml_predict 130 150), --test or --widget: "
                              "exactly one of them")
        values = _floats(args.values)
        board = self._require_board(args.name)
        features, labels = model_columns(board.name, self.root)
        if args.widget:
            return BoardSlider(board, root=self.root)
        if args.test:
            from . import api
            with self._progress(f"{board.name}: test set through the board") as bar:
                def progress(*report):
                    if len(report) >= 2 and all(isinstance(v, (int, float)) for v in report[:2]):
                        bar.update(report[0], report[1])
                    elif report:
                        bar.update(text=str(report[0]))
                with board_lock(board):
                    result = api.evaluate_on_board(name=board.name, root=self.root, board=board,
                                                   progress=progress)
                bar.finish()
            return EvaluateResult(result, name=board.name, label=",".join(labels) or None,
                                  seconds=bar.elapsed)
        n_inputs = board.plan.n_inputs
        if len(values) % n_inputs:
            raise TinyMLError(f"{board.name} takes {n_inputs} value(s) per row "
                              f"({', '.join(features) or 'its features'}); got {len(values)}")
        with board_lock(board):
            predictions = board.compare(values)
            timing = board.last_timing
        cycles = getattr(timing, "cycles", None)
        return PredictResult(predictions, features=features, labels=labels, name=board.name,
                             cycles_per_row=cycles / len(predictions) if cycles else None,
                             classes=model_classes(board.name, self.root))


# -- extension entry points -------------------------------------------------------------------------
_strong: dict[int, TinyMLMagics] = {}


def _drop_refused_settings(ip) -> None:
    """Remove settings the shell's config keeps although the magics refused them.

    ``%config TinyMLMagics.baud = -1`` is refused by the running instance, but IPython has
    already merged it into the shell's config, where it would stop a reloaded extension from
    loading. Each value is tried on a scratch instance; refused ones are dropped with a note.
    """
    config = getattr(ip, "config", None)
    if config is None or "TinyMLMagics" not in config:
        return
    section = config["TinyMLMagics"]
    scratch = TinyMLMagics()
    names = TinyMLMagics.class_trait_names(config=True)
    for key in [k for k in list(section.keys()) if k in names]:
        try:
            setattr(scratch, key, section[key])
        except TraitError as exc:
            print(f"ipytinyml: ignoring TinyMLMagics.{key} = {section[key]!r} ({exc})", file=sys.stderr)
            del section[key]


def load_ipython_extension(ip) -> None:
    """Register the magics (``%load_ext ipytinyml``); nothing heavy is imported."""
    previous = _strong.get(id(ip))
    if previous is not None:  # loaded again without unloading: replace the old instance
        _forget(ip, previous)
    _drop_refused_settings(ip)
    magics = TinyMLMagics(shell=ip)
    if previous is not None and previous._board is not None:
        magics._board, magics._flashed = previous._board, previous._flashed
        previous._board = previous._flashed = None
    ip.register_magics(magics)
    _strong[id(ip)] = magics


def _forget(ip, magics: TinyMLMagics) -> None:
    configurables = getattr(ip, "configurables", None)
    if configurables is not None and magics in configurables:
        configurables.remove(magics)


def unload_ipython_extension(ip) -> None:
    """Close an open board and remove the magics (``%unload_ext ipytinyml``)."""
    magics = _strong.pop(id(ip), None)
    if magics is None:
        return
    magics.close_board()
    registry = ip.magics_manager.magics
    for kind, names in TinyMLMagics.magics.items():
        for name in names:
            registry.get(kind, {}).pop(name, None)
    _forget(ip, magics)


@atexit.register
def _close_boards_at_exit() -> None:  # a kernel shutting down stops its simulator
    for magics in list(_strong.values()):
        magics.close_board()
