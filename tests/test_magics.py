"""The magics in a real IPython shell (``InteractiveShell.instance()``), on real TensorFlow,
the real AVR build and the virtual Uno in simavr.

Covers the no-argument chain after the first cell, every kind of bad input answered with a
one-line ``UsageError`` (and nothing saved damaged), ``%config`` settings, help, reloading,
and that loading the extension and predicting with a board never import TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from ipytinyml.errors import DataError, TinyMLError

EPOCHS = 60  # full-batch steps: a rough fit is enough to exercise the magics


# -- fixtures and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ip(tmp_path_factory):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ipytinyml")
    root = tmp_path_factory.mktemp("magics")
    shell.run_line_magic("config", f"TinyMLMagics.root = {str(root)!r}")
    shell.run_line_magic("config", "TinyMLMagics.tracebacks = False")
    shell.run_line_magic("config", "TinyMLMagics.verbose = True")
    shell.user_ns["_root"] = root
    yield shell
    shell.run_line_magic("unload_ext", "ipytinyml")


def magics_of(shell):
    return shell.magics_manager.registry["TinyMLMagics"]


@pytest.fixture(scope="module")
def root(ip):
    return ip.user_ns["_root"]


@pytest.fixture(scope="module")
def trained(ip, root):
    """hp_mpg trained and quantized through the magics (the first cell names it, then no args)."""
    result = ip.run_cell(f"%%tinyml_train --data autompg --features horsepower --label mpg "
                         f"--name hp_mpg --epochs {EPOCHS}\n# default model\n")
    result.raise_error()
    train = result.result
    quant = ip.run_cell("%tinyml_quantize")
    quant.raise_error()
    return train, quant.result


def run(ip, capsys, source):
    capsys.readouterr()
    result = ip.run_cell(source)
    out, err = capsys.readouterr()
    return result, out, err


def assert_one_line_usage_error(result, out, err, *fragments):
    """The cell failed with exactly a UsageError, printed as one line and no traceback."""
    assert type(result.error_in_exec) is UsageError, repr(result.error_in_exec)
    message = str(result.error_in_exec)
    assert "\n" not in message
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"UsageError: {message}"], err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in message, message
    return message


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- loading ------------------------------------------------------------------------------------------
def test_load_ext_is_fast_and_imports_nothing_heavy():
    code = textwrap.dedent("""
        import json, sys, time
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        before = set(sys.modules)
        t = time.perf_counter()
        ip.run_line_magic("load_ext", "ipytinyml")
        seconds = time.perf_counter() - t
        heavy = sorted(m for m in ("tensorflow", "keras", "ai_edge_litert", "tflite_micro", "serial",
                                   "matplotlib", "ipywidgets", "pandas", "numpy") if m in sys.modules)
        assert ip.find_line_magic("tinyml_flash") is not None
        print(json.dumps({"seconds": seconds, "heavy": heavy}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["seconds"] < 0.5


def test_help_is_the_docstring(ip, capsys):
    doc = ip.find_line_magic("tinyml_flash").__doc__
    for part in ("%tinyml_flash [--name NAME]", "--board", "(default:", "Examples", "In [1]:"):
        assert part in doc
    for magic in ("tinyml_train", "tinyml_quantize", "tinyml_predict"):
        assert "Examples" in ip.find_magic(magic).__doc__
    result, out, err = run(ip, capsys, "%tinyml_flash --help")
    assert result.success and "Examples" in out and not err


# -- the chain ---------------------------------------------------------------------------------------
def test_train_shows_split_mae_and_plot(trained, root):
    train, _ = trained
    assert train.name == "hp_mpg"
    assert train.data["n_train"] == 314 and train.data["n_test"] == 78
    assert 0 < train.mae < 8
    assert train.plot_png.startswith(b"\x89PNG")
    html = train._repr_html_()
    assert "314" in html and "78" in html and "data:image/png;base64," in html
    assert "test MAE" in repr(train)
    assert (root / "hp_mpg" / "report.json").is_file()


def test_quantize_table_has_every_variant(trained):
    _, quant = trained
    assert quant.name == "hp_mpg"
    assert set(quant.variants) == {"float32", "int8"}
    assert abs(quant.int8_vs_float32) < 0.1
    text = repr(quant)
    assert "float32" in text and "int8" in text and "int8 vs float32" in text
    assert quant.size("int8") > 1000


def test_chain_without_arguments(ip, trained, capsys):
    """After the first cell nothing needs --name: flash, values, the test set, the slider."""
    result, out, err = run(ip, capsys, "%tinyml_flash")
    result.raise_error()
    flashed = result.result
    board = flashed.board
    assert board.kind == "sim" and board.name == "hp_mpg"
    assert "virtual" in (flashed.note or "")  # 'auto' with no board attached: the virtual Uno
    assert "flash used" in repr(flashed) and "RAM used" in repr(flashed)

    result, out, err = run(ip, capsys, "%tinyml_predict 130 150")
    result.raise_error()
    predictions = result.result
    assert len(predictions) == 2 and predictions.all_agree
    assert [p.inputs for p in predictions] == [(130.0,), (150.0,)]
    assert all(p.board == p.notebook and p.device_us > 0 for p in predictions)
    assert "✓" in repr(predictions) and "✗" not in repr(predictions)

    result, out, err = run(ip, capsys, "r = %tinyml_predict --test")
    result.raise_error()
    evaluated = ip.user_ns["r"]
    assert evaluated.matched == evaluated.total == 78
    assert evaluated.latency["device_us"] > 0 and evaluated.latency["predictions_per_s"] > 0
    assert "78/78" in repr(evaluated)
    # the predicted-vs-actual plot: one point per test row at the board's prediction, and y = x
    import numpy as np

    import ipytinyml as tm
    split = tm.load_split("hp_mpg", ip.user_ns["_root"])
    np.testing.assert_array_equal(np.asarray(evaluated.rows["board"], np.float32),
                                  board.predict(split["test_x"]))
    np.testing.assert_array_equal(np.asarray(evaluated.rows["actual"]), split["test_y"])
    page = evaluated._repr_html_()
    plot = page[page.index("tinyml-pred-vs-actual"):]
    assert plot.count("<circle") == 78 and "tinyml-diagonal" in plot and "true mpg" in plot
    assert "test_rows" not in json.loads((ip.user_ns["_root"] / "hp_mpg" / "report.json").read_text())
    assert "78/78" in page and "device time" in page  # the tables stay

    result, out, err = run(ip, capsys, "%tinyml_predict --widget")
    result.raise_error()
    slider = result.result
    try:
        assert slider.last is not None and slider.last.agree  # the first reading
        slider.set(200)
        assert slider.wait_idle(10)
        assert slider.last.inputs == (200.0,) and slider.last.agree
        assert slider.last.board == tuple(float(v) for v in board.notebook_predict([200])[0])
        assert 'data-agree="1"' in slider.result.value
        assert slider.plot.value.count('class="tinyml-marker"') == 1 and "along horsepower" in slider.plot.value
        bundle = slider._repr_mimebundle_()  # what an exported notebook shows without widgets
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert "horsepower 200 → board" in bundle["text/plain"] and "✓ agree" in bundle["text/plain"]
        assert 'data-agree="1"' in bundle["text/html"] and "<svg" in bundle["text/html"]
        for value in (60, 70, 80, 90, 100):  # a quick drag: only the last value is needed
            slider.set(value)
        assert slider.wait_idle(10)
        assert slider.last.inputs == (100.0,)
    finally:
        slider.close()

    # flashing again closes the previous board and its simulator
    result, out, err = run(ip, capsys, "%tinyml_flash --board sim")
    result.raise_error()
    assert magics_of(ip).current_board is not board
    with pytest.raises(Exception):
        board.predict([130])


def test_widget_reports_a_vanished_board_without_raising(ip, trained, capsys):
    result, out, err = run(ip, capsys, "%tinyml_flash --board sim")
    result.raise_error()
    result, out, err = run(ip, capsys, "%tinyml_predict --widget")
    slider = result.result
    try:
        magics_of(ip).current_board.close()  # the board disappears under the widget
        slider.set(120)
        assert slider.wait_idle(10)
        assert slider.errors >= 1
        assert "board not answering" in slider.status.value
        assert not err.strip()
    finally:
        slider.close()
        magics_of(ip).close_board()


# -- bad input: one line each, nothing damaged -----------------------------------------------------------
@pytest.fixture
def empty_inputs(ip, tmp_path):
    import pandas as pd
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("")
    ip.user_ns["empty_df"] = pd.DataFrame({"horsepower": [], "mpg": []})
    ip.user_ns["not_a_frame"] = [1, 2, 3]
    return empty_csv


BAD_TRAIN = {
    "unknown option": ("%%tinyml_train --bogus 1\n# x\n", "unrecognized arguments"),
    "bad int": ("%tinyml_train --epochs abc", "invalid int value"),
    "negative epochs": ("%tinyml_train --epochs -3", "epochs"),
    "unknown dataset": ("%tinyml_train --data autompgg", "did you mean 'autompg'"),
    "missing file": ("%tinyml_train --data nosuch.csv", "no such data file"),
    "unknown column": ("%tinyml_train --features horsepowr", "did you mean 'horsepower'"),
    "empty DataFrame": ("%tinyml_train --data empty_df", "DataError"),
    "not a DataFrame": ("%tinyml_train --data not_a_frame", "not a pandas DataFrame"),
    "bad name": ("%tinyml_train --name ../evil", "not a plain identifier"),
    "body without model": ("%%tinyml_train --name other\nx = 1\n", "must define `model`"),
    "body raises": ("%%tinyml_train --name other\nmodel = 1 / 0\n", "ZeroDivisionError"),
    "body syntax error": ("%%tinyml_train --name other\nmodel = (\n", "syntax error"),
    "body model not keras": ("%%tinyml_train --name other\nmodel = 'a string'\n", "keras.Model"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN), ids=list(BAD_TRAIN))
def test_bad_training_input_is_one_line(ip, trained, root, capsys, empty_inputs, case):
    source, fragment = BAD_TRAIN[case]
    before = digests(root)
    ip.user_ns["model"] = previous = object()
    result, out, err = run(ip, capsys, source)
    assert_one_line_usage_error(result, out, err, fragment)
    assert digests(root) == before, "a failed step must not touch saved artifacts"
    if case != "body model not keras":  # a body that ran keeps what it defined, like any cell
        assert ip.user_ns["model"] is previous


def test_empty_csv_is_one_line(ip, trained, capsys, empty_inputs):
    result, out, err = run(ip, capsys, f"%tinyml_train --data {empty_inputs}")
    assert_one_line_usage_error(result, out, err, "DataError", "empty")


BAD_OTHER = {
    "unknown model": ("%tinyml_quantize --name hp_mgp", "did you mean 'hp_mpg'"),
    "unknown variant": ("%tinyml_quantize --variants int9", "did you mean 'int8'"),
    "quantize extra": ("%tinyml_quantize now", "unrecognized arguments"),
    "unknown board": ("%tinyml_flash --board unoo", "did you mean 'uno'"),
    "unknown runtime": ("%tinyml_flash --runtime cuda", "invalid choice"),
    "not a number": ("%tinyml_predict 13O", "not a number"),
    "nan": ("%tinyml_predict nan", "not a number"),
    "beyond float32": ("%tinyml_predict 1e40", "float32 range"),
    "nothing to predict": ("%tinyml_predict", "exactly one"),
    "values and test": ("%tinyml_predict 130 --test", "exactly one"),
}


@pytest.mark.parametrize("case", list(BAD_OTHER), ids=list(BAD_OTHER))
def test_bad_input_is_one_line(ip, trained, root, capsys, case):
    source, fragment = BAD_OTHER[case]
    before = digests(root / "hp_mpg")
    result, out, err = run(ip, capsys, source)
    assert_one_line_usage_error(result, out, err, fragment)
    assert digests(root / "hp_mpg") == before


def test_no_board_is_one_line(ip, trained, capsys):
    magics_of(ip).close_board()
    for source in ("%tinyml_predict 130", "%tinyml_predict --test", "%tinyml_predict --widget"):
        result, out, err = run(ip, capsys, source)
        assert_one_line_usage_error(result, out, err, "LinkError", "%tinyml_flash")


def test_real_board_without_hardware_is_one_line(ip, trained, capsys):
    """No Uno is attached here: asking for one fails with one line, and the board already
    connected keeps working."""
    ip.run_cell("%tinyml_flash --name hp_mpg --board sim").raise_error()
    board = magics_of(ip).current_board
    try:
        result, out, err = run(ip, capsys, "%tinyml_flash --board uno --port /dev/nonexistent-tty")
        assert_one_line_usage_error(result, out, err)
        assert magics_of(ip).current_board is board
        result, out, err = run(ip, capsys, "%tinyml_predict 130")
        assert result.success and result.result.all_agree
    finally:
        magics_of(ip).close_board()


def test_stale_board_is_one_line(ip, root, capsys):
    ip.run_cell(f"%tinyml_train --name stale --epochs {EPOCHS}").raise_error()
    ip.run_cell("%tinyml_quantize").raise_error()
    ip.run_cell("%tinyml_flash --board sim").raise_error()
    try:
        ip.run_cell(f"%tinyml_train --name stale --epochs {EPOCHS} --seed 1").raise_error()
        result, out, err = run(ip, capsys, "%tinyml_predict 130")  # retrained, not re-quantized
        assert_one_line_usage_error(result, out, err, "%tinyml_quantize")
        ip.run_cell("%tinyml_quantize").raise_error()
        result, out, err = run(ip, capsys, "%tinyml_predict 130")  # re-quantized, not re-flashed
        assert_one_line_usage_error(result, out, err, "older build", "%tinyml_flash")
        ip.run_cell("%tinyml_flash").raise_error()
        result, out, err = run(ip, capsys, "%tinyml_predict 130")
        assert result.success and result.result.all_agree
    finally:
        magics_of(ip).close_board()


# -- settings ---------------------------------------------------------------------------------------------
def test_config_settings_take_effect(ip, trained, tmp_path, capsys):
    magics = magics_of(ip)
    old_root = magics.root
    try:
        ip.run_line_magic("config", f"TinyMLMagics.root = {str(tmp_path / 'elsewhere')!r}")
        ip.run_line_magic("config", "TinyMLMagics.verbose = False")
        result, out, err = run(ip, capsys, f"%tinyml_train --name moved --epochs {EPOCHS}")
        result.raise_error()
        assert (tmp_path / "elsewhere" / "moved" / "report.json").is_file()
        assert "training moved" not in out  # no progress line when verbose is off
        ip.run_line_magic("config", "TinyMLMagics.verbose = True")
        result, out, err = run(ip, capsys, "%tinyml_quantize")
        assert "quantizing moved" in out

        # the default board: 'sim' asked for explicitly, so no "no board found" note
        ip.run_line_magic("config", "TinyMLMagics.board = 'sim'")
        result, out, err = run(ip, capsys, "%tinyml_flash --name moved")
        assert result.result.requested == "sim" and result.result.note is None
        magics.close_board()

        # a bad value is refused and the old one kept
        capsys.readouterr()
        ip.run_line_magic("config", "TinyMLMagics.board = 'unoo'")
        ip.run_line_magic("config", "TinyMLMagics.baud = -1")
        assert magics.board == "sim" and magics.baud == 115200

        # tracebacks: the original error, with its traceback
        ip.run_line_magic("config", "TinyMLMagics.tracebacks = True")
        result, out, err = run(ip, capsys, "%tinyml_train --data autompgg")
        assert isinstance(result.error_in_exec, DataError)
        assert "Traceback" in out + err or "DataError" in out
        result, out, err = run(ip, capsys, "%%tinyml_train --name other\nmodel = 1 / 0\n")
        assert isinstance(result.error_in_exec, ZeroDivisionError)
    finally:
        ip.run_line_magic("config", "TinyMLMagics.tracebacks = False")
        ip.run_line_magic("config", "TinyMLMagics.board = 'auto'")
        ip.run_line_magic("config", f"TinyMLMagics.root = {str(old_root)!r}")


def test_config_lists_settings(ip, capsys):
    capsys.readouterr()
    ip.run_line_magic("config", "TinyMLMagics")
    out = capsys.readouterr().out
    for trait in ("board", "port", "baud", "root", "verbose", "tracebacks"):
        assert f"TinyMLMagics.{trait}" in out


def test_reload_keeps_settings_and_closes_board(ip, trained, capsys):
    ip.run_cell("%tinyml_flash --name hp_mpg --board sim").raise_error()
    board = magics_of(ip).current_board
    root = magics_of(ip).root
    ip.run_line_magic("config", "TinyMLMagics.baud = -1")  # refused, but kept in the shell's config
    capsys.readouterr()
    ip.run_line_magic("reload_ext", "ipytinyml")
    assert "ignoring TinyMLMagics.baud" in capsys.readouterr().err
    assert magics_of(ip).current_board is None
    assert magics_of(ip).root == root and magics_of(ip).baud == 115200
    with pytest.raises(Exception):
        board.predict([130])
    assert sum(type(c).__name__ == "TinyMLMagics" for c in ip.configurables) == 1
    result, out, err = run(ip, capsys, "%tinyml_quantize --name hp_mpg --variants float32")
    result.raise_error()


# -- the board path never imports TensorFlow ------------------------------------------------------------------
def test_board_path_does_not_import_tensorflow(trained, root):
    code = textwrap.dedent(f"""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "ipytinyml")
        ip.run_line_magic("config", "TinyMLMagics.root = {str(root)!r}")
        for cell in ("%tinyml_flash --name hp_mpg --board sim", "r = %tinyml_predict 130 150",
                     "w = %tinyml_predict --widget"):
            ip.run_cell(cell).raise_error()
        assert ip.user_ns["r"].all_agree
        w = ip.user_ns["w"]
        w.set(180)
        assert w.wait_idle(10) and w.last.agree
        w.close()
        ip.run_line_magic("unload_ext", "ipytinyml")
        print("TF", "tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "TF False False"


def test_magics_raise_only_usage_errors_for_tinyml_errors():
    """The mapping itself: class name first, one line, chained to the cause."""
    from ipytinyml.magics import _user_errors

    class Fake:
        tracebacks = False

        @_user_errors
        def go(self):
            raise DataError("no column 'x' in the data", hint="did you mean 'y'?")

    with pytest.raises(UsageError) as info:
        Fake().go()
    assert type(info.value) is UsageError
    assert str(info.value) == "DataError: no column 'x' in the data (did you mean 'y'?)"
    assert isinstance(info.value.__cause__, TinyMLError)
    Fake.tracebacks = True
    with pytest.raises(DataError):
        Fake().go()


def test_several_features_and_labels_through_every_magic(ip, root):
    """--label mpg,acceleration: one output each, in the predict table (clamped values marked),
    --test (an MAE per label) and the quantize verdicts; board and notebook agree."""
    cell = ip.run_cell(f"%%tinyml_train --data autompg --features horsepower,weight "
                       f"--label mpg,acceleration --name two --epochs {EPOCHS}\n# default model\n")
    cell.raise_error()
    assert cell.result.to_dict()["data"]["labels"] == ["mpg", "acceleration"]
    quant = ip.run_cell("%tinyml_quantize")
    quant.raise_error()
    assert "flashable with --runtime native, tflm" in repr(quant.result)
    ip.run_cell("%tinyml_flash --board sim").raise_error()
    predicted = ip.run_cell("%tinyml_predict 130 3000  1e9 3000")
    predicted.raise_error()
    table = repr(predicted.result)
    for header in ("board mpg", "board acceleration", "notebook mpg", "notebook acceleration"):
        assert header in table
    assert "1e+09 (clamped)" in table and "3000 (clamped)" not in table
    assert predicted.result.all_agree
    tested = ip.run_cell("%tinyml_predict --test")
    tested.raise_error()
    text = repr(tested.result)
    assert "mpg " in text and "acceleration " in text and "78/78" in text


def test_results_are_dataframes_too(ip, trained):
    """%tinyml_quantize / %tinyml_predict / --test results: .to_frame() gives numbers to keep
    working with (not the formatted strings)."""
    _, quant = trained
    frame = quant.to_frame()
    assert list(frame.index) == ["keras", "float32", "int8"]
    assert frame.loc["int8", "bytes"] > 0
    assert abs(frame.loc["int8", "vs_float32"] - (frame.loc["int8", "mae"] - frame.loc["float32", "mae"])) < 1e-12
    ip.run_cell("%tinyml_flash --name hp_mpg --board sim").raise_error()
    predicted = ip.run_cell("%tinyml_predict --name hp_mpg 90 130")
    predicted.raise_error()
    rows = predicted.result.to_frame()
    assert list(rows["horsepower"]) == [90.0, 130.0] and rows["agree"].all()
    assert (rows["board mpg"] == rows["notebook mpg"]).all()
    tested = ip.run_cell("%tinyml_predict --name hp_mpg --test")
    tested.raise_error()
    summary = tested.result.to_frame()
    assert summary["parity_matched"].iloc[0] == summary["parity_total"].iloc[0] == 78


def test_messy_csv_columns_by_name_and_rows_left_out(ip, tmp_path):
    """Column names with spaces and symbols, given as quoted words or joined by commas, pick the
    same columns; rows whose feature is missing ("", "n/a") are left out and the result says how
    many."""
    rng = np.random.default_rng(3)
    temp = rng.uniform(-10, 40, 60)
    humidity = rng.uniform(10, 90, 60).round().astype(object)
    humidity[3], humidity[5] = "n/a", ""
    df = pd.DataFrame({"Temp (°C)": temp.round(1), "humidity %": humidity,
                       "feel": np.where(np.abs(temp - 22) < 8, "good", "bad")})
    path = tmp_path / "weather.csv"
    df.to_csv(path, index=False)
    words = ip.run_cell(f'%tinyml_train --data {path} --features "Temp (°C)" "humidity %" '
                        f'--label feel --name messy --epochs {EPOCHS}')
    words.raise_error()
    commas = ip.run_cell(f'%tinyml_train --data {path} --features "Temp (°C),humidity %" '
                         f'--label feel --name messy2 --epochs {EPOCHS}')
    commas.raise_error()
    for result in (words.result, commas.result):
        data = result.to_dict()["data"]
        assert data["features"] == ["Temp (°C)", "humidity %"] and data["labels"] == ["feel"]
        assert data["n_dropped"] == 2 and data["n_train"] + data["n_test"] == 58
        assert "rows left out  2 (a missing feature value)" in repr(result)
