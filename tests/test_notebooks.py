"""Both example notebooks, executed top to bottom with nbclient in real Jupyter kernels on
the virtual Uno (simavr), with assertions on what they show and on the report.json they
write. The two notebooks run concurrently (one kernel each) to share the wall time.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
MAIN = EXAMPLES / "autompg_virtual_board.ipynb"
BYOD = EXAMPLES / "bring_your_own_data.ipynb"
ORIGIN = EXAMPLES / "autompg_origin_classifier.ipynb"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _load_demo():
    spec = importlib.util.spec_from_file_location("ipytinyml_demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    work = tmp_path_factory.mktemp("notebooks")
    main, byod, origin = demo.execute_notebooks([MAIN, BYOD, ORIGIN], work, timeout=600)
    return {"main": (main, work / MAIN.stem), "byod": (byod, work / BYOD.stem),
            "origin": (origin, work / ORIGIN.stem)}


def _cell(nb, startswith: str):
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(startswith):
            return cell
    raise AssertionError(f"no cell starting with {startswith!r}")


def _texts(cell, mime: str = "text/html") -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type in ("display_data", "execute_result"):
            parts.append(str(out.get("data", {}).get(mime, "")))
        elif out.output_type == "stream" and mime == "stream":
            parts.append(out.text)
    return "\n".join(parts)


def _plain(cell) -> str:
    return _texts(cell, "text/plain")


def _report(folder: Path, name: str) -> dict:
    return json.loads((folder / "tinyml" / name / "report.json").read_text())


# -- the stored notebooks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [MAIN, BYOD, ORIGIN], ids=["main", "byod", "origin"])
def test_examples_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert any(c.cell_type == "markdown" for c in nb.cells)
    assert nb.cells[0].cell_type == "markdown"


# -- the main example ---------------------------------------------------------------------------------------
def test_main_notebook_runs_clean(executed):
    nb, _ = executed["main"]
    assert demo.cell_errors(nb) == []
    for cell in nb.cells:
        if cell.cell_type == "code":
            streams = _texts(cell, "stream")
            assert "Traceback" not in streams and "UsageError" not in streams


def test_main_notebook_training_cell(executed):
    nb, _ = executed["main"]
    cell = _cell(nb, "%%tinyml_train")
    html = _texts(cell)
    assert "tinyml-progress" in html and "1000/1000" in html  # the live display, updated to the end
    assert "tinyml-train" in html and "314" in html and ">78<" in html
    assert "data:image/png;base64," in html  # the fit plot
    assert "test MAE" in _plain(cell)


def test_main_notebook_accuracy_and_quantize_table(executed):
    nb, folder = executed["main"]
    report = _report(folder, "hp_mpg")
    float32, int8 = report["variants"]["float32"]["mae"], report["variants"]["int8"]["mae"]
    assert float32 <= 3.0
    assert abs(int8 - float32) <= 0.05
    text = _plain(_cell(nb, "%tinyml_quantize"))
    assert f"{float32:.3f}" in text and f"{int8:.3f}" in text and "int8 vs float32" in text


def test_main_notebook_flash_predict_and_parity(executed):
    nb, folder = executed["main"]
    flash = _plain(_cell(nb, "%tinyml_flash"))
    assert "virtual Arduino Uno" in flash and "flash used" in flash and "RAM used" in flash

    predict = _plain(_cell(nb, "%tinyml_predict 90"))
    assert predict.count("✓") == 3 and "✗" not in predict

    report = _report(folder, "hp_mpg")
    assert report["parity"]["matched"] == report["parity"]["total"] == 78
    if "raw_total" in report["parity"]:
        assert report["parity"]["raw_matched"] == report["parity"]["raw_total"] == 256
    assert report["latency"]["device_us"] > 0
    assert report["latency"]["predictions_per_s"] > 0
    assert abs(report["mae"] - report["variants"]["int8"]["mae"]) < 1e-6  # the board is the int8 model
    test = _plain(_cell(nb, "%tinyml_predict --test"))
    assert "78/78 test rows (100 %) bit-exact" in test and "predictions/s" in test


def test_main_notebook_widget_and_report_cell(executed):
    nb, _ = executed["main"]
    widget = _cell(nb, "%tinyml_predict --widget")
    assert any(WIDGET_MIME in out.get("data", {}) for out in widget.outputs)
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {}).values()
    sliders = [m["state"] for m in models if m["model_name"] == "FloatSliderModel"]
    assert [s["description"] for s in sliders] == ["horsepower"]
    readings = [m["state"]["value"] for m in models
                if m["model_name"] == "HTMLModel" and "tinyml-reading" in m["state"].get("value", "")]
    assert readings and 'data-agree="1"' in readings[0]
    assert "parity" in _plain(nb.cells[-1])


def test_demo_summary_reads_the_report(executed, capsys):
    nb, folder = executed["main"]
    s = demo.summary(_report(folder, "hp_mpg"))
    assert s["parity_matched"] == s["parity_total"] == 78
    assert s["float32_mae"] <= 3.0 and s["device_us"] > 0
    demo.print_summary(s, nb, 1.0)
    out = capsys.readouterr().out
    for part in ("float32 test MAE", "int8 test MAE", "parity", "78/78", "device time", "throughput"):
        assert part in out


# -- bring your own data ---------------------------------------------------------------------------------------
def test_byod_notebook(executed):
    nb, folder = executed["byod"]
    assert demo.cell_errors(nb) == []
    report = _report(folder, "greenhouse")
    assert report["data"]["features"] == ["temperature", "humidity"]
    assert report["data"]["n_train"] == 192 and report["data"]["n_test"] == 48
    float32, int8 = report["variants"]["float32"]["mae"], report["variants"]["int8"]["mae"]
    assert float32 <= 0.08  # kPa; the readings carry 0.03 kPa of noise
    assert abs(int8 - float32) <= 0.02
    assert "your model" in _plain(_cell(nb, "%%tinyml_train"))
    assert report["parity"]["matched"] == report["parity"]["total"] == 48

    predict = _plain(_cell(nb, "%tinyml_predict 15 80"))
    assert predict.count("✓") == 3 and "✗" not in predict
    assert "temperature" in predict and "humidity" in predict

    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sliders = [m["state"] for m in state.values() if m["model_name"] == "FloatSliderModel"]
    assert sorted(s["description"] for s in sliders) == ["humidity", "temperature"]


def test_origin_classifier_notebook(executed):
    """The classifier example: softmax on the virtual Uno, accuracy, confusion, parity, widget."""
    nb, folder = executed["origin"]
    assert demo.cell_errors(nb) == []
    report = _report(folder, "origin")
    assert report["data"]["classes"] == ["Europe", "Japan", "USA"]
    v = report["variants"]
    assert v["int8"]["accuracy"] >= 0.70 and abs(v["int8"]["accuracy"] - v["float32"]["accuracy"]) <= 0.04
    assert report["parity"]["matched"] == report["parity"]["total"] == report["data"]["n_test"]
    assert "confusion matrix" in _plain(_cell(nb, "%tinyml_quantize"))
    predict = _plain(_cell(nb, "%tinyml_predict 18"))
    assert predict.count("✓") == 2 and "USA" in predict
    tested = _plain(_cell(nb, "%tinyml_predict --test"))
    assert "test accuracy" in tested and "confusion matrix on the board" in tested
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sliders = [m["state"] for m in state.values() if m["model_name"] == "FloatSliderModel"]
    assert len(sliders) == 7


def test_demo_fails_when_a_cell_fails(tmp_path):
    broken = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0"),
                nbformat.v4.new_code_cell("%load_ext ipytinyml"),
                nbformat.v4.new_code_cell("%tinyml_predict 130")]  # no board: a UsageError
    nbformat.write(nb, broken)
    assert demo.main(["--notebook", str(broken), "--keep", str(tmp_path / "run")]) == 1
    executed = nbformat.read(tmp_path / "run" / "broken" / "executed_broken.ipynb", as_version=4)
    errors = demo.cell_errors(executed)
    assert len(errors) == 2 and "ZeroDivisionError" in errors[0] and "UsageError: LinkError" in errors[1]


# -- exported to HTML ---------------------------------------------------------------------------------------
def _exported_widget_cell(nb):
    """nbconvert's HTML (the lab template, as `jupyter nbconvert --to html`) and, parsed from it,
    the output area of the `%tinyml_predict --widget` cell."""
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    cells = BeautifulSoup(body, "html.parser").select(".jp-Cell.jp-CodeCell")
    widget = [c for c in cells if "--widget" in c.select_one(".jp-InputArea").get_text()]
    assert len(widget) == 1, len(cells)
    return widget[0].select_one(".jp-OutputArea")


@pytest.mark.parametrize("which, reading", [
    ("main", "horsepower "), ("byod", "temperature "), ("origin", "cylinders ")])
def test_exported_html_shows_the_widget_cell(executed, which, reading):
    """Saved the way JupyterLab saves a notebook by default (without widget state), the widget
    cell of the exported page shows the reading when the cell ran, and its plot; never a blank
    Out[]. With the state nbclient saved, nbconvert embeds the widget itself, and that state
    holds the same reading for the widget-manager script to draw."""
    import copy

    nb, _ = executed[which]
    bare = copy.deepcopy(nb)
    bare.metadata.pop("widgets", None)
    out = _exported_widget_cell(bare)
    text = " ".join(out.get_text().split())
    assert reading in text and "✓ agree" in text, text
    assert ("USA" in text) if which == "origin" else ("→ board" in text), text
    assert "the reading when this cell ran" in text
    snapshot = out.select_one(".tinyml-widget-snapshot")
    assert snapshot is not None and snapshot.select_one("svg.tinyml-svg") is not None
    assert snapshot.select_one(".tinyml-reading")["data-agree"] == "1"
    if which == "origin":
        assert len(snapshot.select(".tinyml-class")) == 3
        assert len(snapshot.select("polyline.tinyml-line")) == 3  # one probability line per class
    else:
        assert len(snapshot.select(".tinyml-marker")) == 1 and snapshot.select(".tinyml-points circle")

    out = _exported_widget_cell(nb)
    view = json.loads(out.select_one(f'script[type="{WIDGET_MIME}"]').string)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert view["model_id"] in state  # what the embedded widget manager draws from
    htmls = [m["state"].get("value", "") for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any('data-agree="1"' in h and reading.strip() in h for h in htmls)
