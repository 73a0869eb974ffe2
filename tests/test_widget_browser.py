"""The board slider in a real JupyterLab 4, driven by headless Chromium through Playwright.

A JupyterLab server is started on a free localhost port with a temporary root folder;
each test opens a notebook that flashes a trained model to the virtual Uno (simavr) and
shows ``%tinyml_predict --widget``: one feature (the slider is dragged like a user would,
until the board's answer for the new value is shown and equals the notebook's own
prediction), two features (the sliders' tracks line up; the plot follows the slider last
moved) and a classifier (one bar per class, the winner in bold). Screenshots are saved to
/tmp/ipytinyml_widget*.png.

Needs JupyterLab, Playwright's Python package and Debian's Chromium (``scripts/setup``
installs them; ``playwright install`` is never used). Skipped when Chromium is absent.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("IPYTINYML_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path("/tmp/ipytinyml_widget.png")
SCREENSHOT_TWO = Path("/tmp/ipytinyml_widget_two_features.png")
SCREENSHOT_CLASSES = Path("/tmp/ipytinyml_widget_classifier.png")
TOKEN = "ipytinyml-widget-test"
SEVEN = ["mpg", "cylinders", "displacement", "horsepower", "weight", "acceleration", "model_year"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("jupyter") is None,
                                reason="needs /usr/bin/chromium and JupyterLab (scripts/setup)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(cells) -> dict:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                  "language": "python"}}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A trained + quantized model and a JupyterLab server rooted next to it."""
    import nbformat

    import ipytinyml as tm

    from ipytinyml.data import load_autompg

    home = tmp_path_factory.mktemp("lab")
    tm.train(name="hp_mpg", root=home / "tinyml", epochs=200)
    tm.quantize(name="hp_mpg", root=home / "tinyml")
    tm.train(features=["horsepower", "weight"], name="hw_mpg", root=home / "tinyml", epochs=200)
    tm.quantize(name="hw_mpg", root=home / "tinyml")
    cars = load_autompg().dropna()
    cars["origin"] = cars["origin"].map({1: "USA", 2: "Europe", 3: "Japan"})
    tm.train(data=cars, features=SEVEN, label="origin", name="origin", root=home / "tinyml", epochs=300)
    tm.quantize(name="origin", root=home / "tinyml")
    for notebook, name in [("slider", "hp_mpg"), ("two", "hw_mpg"), ("origin", "origin")]:
        nbformat.write(_notebook([
            "%load_ext ipytinyml",
            f"%tinyml_flash --name {name} --board sim",
            "%tinyml_predict --widget",
        ]), home / f"{notebook}.ipynb")

    settings = home / ".lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / ".lab-workspaces"),
               JUPYTER_CONFIG_DIR=str(home / ".jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(home / ".jupyter-runtime"),
               TF_CPP_MIN_LOG_LEVEL="3",
               # the kernels import this checkout's package, not whichever one is installed
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    port = _free_port()
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={home}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--ServerApp.port_retries=0"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"base": base, "home": home}
    finally:
        try:  # shut the kernels down cleanly first: their atexit stops the simulators
            req = urllib.request.Request(f"{base}/api/shutdown?token={TOKEN}", method="POST")
            urllib.request.urlopen(req, timeout=10)
            server.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()


def _reading(page) -> dict:
    return page.eval_on_selector(
        ".tinyml-result .tinyml-reading",
        "el => ({input: parseFloat(el.dataset.input), board: parseFloat(el.dataset.board),"
        " notebook: parseFloat(el.dataset.notebook), agree: el.dataset.agree,"
        " text: el.textContent})")


_STARTED = ("() => [...document.querySelectorAll('.jp-Notebook .jp-InputArea-prompt')]"
            ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))")


def _open_notebook(page, lab, notebook: str, workspace: str | None = None) -> None:
    """Open ``notebook`` in Lab with its kernel session already made through the REST API: Lab
    then joins that session, where on its own, under load, it sometimes asked "Select Kernel"
    and ran the cells in two kernels."""
    body = json.dumps({"path": notebook, "name": notebook, "type": "notebook",
                       "kernel": {"name": "python3"}}).encode()
    req = urllib.request.Request(f"{lab['base']}/api/sessions?token={TOKEN}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).close()
    where = f"workspaces/{workspace}/" if workspace else ""
    page.goto(f"{lab['base']}/lab/{where}tree/{notebook}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)


def _run_all_cells(page) -> None:
    """Run > Run All Cells, once the kernel is idle; again if the first click came too early
    (a click while the kernel session is still being set up is dropped)."""
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    for _ in range(4):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function(_STARTED, timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            page.keyboard.press("Escape")
    raise AssertionError("JupyterLab never started running the cells")


def test_slider_drives_the_board_in_jupyterlab(lab):
    with _lab_page(lab, SCREENSHOT) as page:
        _open_notebook(page, lab, "slider.ipynb")
        _run_all_cells(page)

        slider = page.wait_for_selector(".tinyml-slider", timeout=90_000)
        page.wait_for_selector(".tinyml-result .tinyml-reading", timeout=30_000)
        first = _reading(page)
        assert first["agree"] == "1" and first["board"] == first["notebook"]
        assert slider.query_selector(".widget-label").inner_text().strip() == "horsepower"

        # drag the handle most of the way right, as a user would
        handle = slider.query_selector(".noUi-handle")
        track = slider.query_selector(".noUi-target").bounding_box()
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(box["x"] + (track["x"] + 0.85 * track["width"] - box["x"]) * k / 10,
                            box["y"] + box["height"] / 2)
            page.wait_for_timeout(20)
        page.mouse.up()

        readout = slider.query_selector(".widget-readout")
        target = float(readout.inner_text())
        assert target != first["input"]
        page.wait_for_function(
            "v => { const el = document.querySelector('.tinyml-result .tinyml-reading');"
            " return el && parseFloat(el.dataset.input) === v; }", arg=target, timeout=15_000)
        moved = _reading(page)
        assert moved["agree"] == "1", moved
        assert moved["board"] == moved["notebook"], moved
        assert moved["board"] != first["board"], (first, moved)
        assert "✓" in moved["text"]
        assert page.query_selector(".tinyml-plot svg .tinyml-marker") is not None
        status = page.inner_text(".tinyml-status")
        assert "request" in status and "not answering" not in status

        # keyboard works too: one step left
        handle.focus()
        page.keyboard.press("ArrowLeft")
        target2 = float(readout.inner_text())
        page.wait_for_function(
            "v => parseFloat(document.querySelector('.tinyml-result .tinyml-reading')"
            ".dataset.input) === v", arg=target2, timeout=15_000)
        assert _reading(page)["agree"] == "1"

        page.query_selector(".tinyml-widget").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOT), full_page=False)
        errors = page.query_selector_all(".jp-OutputArea-output[data-mime-type="
                                         "'application/vnd.jupyter.stderr']")
        assert not [e.inner_text() for e in errors if "Error" in e.inner_text()]


def _stop_kernels(base: str) -> None:
    """End the notebook's kernel (its atexit stops its simulator), so the next test's kernel
    does not share the two cores with an idle simavr."""
    with urllib.request.urlopen(f"{base}/api/sessions?token={TOKEN}", timeout=10) as r:
        sessions = json.loads(r.read())
    for session in sessions:
        req = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={TOKEN}", method="DELETE")
        urllib.request.urlopen(req, timeout=30)


def _open_widget(page, lab, notebook: str, sliders: int) -> None:
    """The notebook open, all cells run, ``sliders`` sliders and a reading. Each notebook has
    its own workspace: the default one would reopen an earlier test's notebook, whose ended
    kernel brings up a dialog over the page."""
    stem = Path(notebook).stem
    _open_notebook(page, lab, notebook, workspace=stem)
    _run_all_cells(page)
    page.wait_for_function("n => document.querySelectorAll('.tinyml-slider').length === n",
                           arg=sliders, timeout=90_000)
    page.wait_for_selector(".tinyml-result .tinyml-reading", timeout=30_000)


def _tracks(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".tinyml-slider", "els => els.map(e => { const t = e.querySelector('.noUi-target')"
        ".getBoundingClientRect(); return {label: e.querySelector('.widget-label').innerText.trim(),"
        " x: t.left, right: t.right}; })")


@contextlib.contextmanager
def _lab_page(lab, screenshot: Path):
    """A Chromium page for the lab; on a failure a screenshot (``<name>_failure.png``) and the
    cell outputs are kept, and the lab's kernels are shut down either way."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            yield page
        except Exception:
            page.screenshot(path=str(screenshot.with_name(screenshot.stem + "_failure.png")))
            outputs = page.eval_on_selector_all(".jp-OutputArea-output", "els => els.map(e => e.innerText)")
            print("cell outputs at failure:", *outputs, sep="\n  ")
            raise
        finally:
            browser.close()
            _stop_kernels(lab["base"])


def test_two_features_aligned_sliders_and_a_plot_along_the_moved_one(lab):
    with _lab_page(lab, SCREENSHOT_TWO) as page:
        _open_widget(page, lab, "two.ipynb", 2)
        tracks = _tracks(page)
        assert [t["label"] for t in tracks] == ["horsepower", "weight"]
        assert abs(tracks[0]["x"] - tracks[1]["x"]) <= 2, tracks  # the tracks start together
        assert abs(tracks[0]["right"] - tracks[1]["right"]) <= 2, tracks
        page.wait_for_selector(".tinyml-plot svg .tinyml-marker", timeout=15_000)
        assert "along horsepower" in page.inner_text(".tinyml-plot-caption")
        assert "weight" in page.inner_text(".tinyml-plot-caption")  # held, and says at what
        # the live widget is shown, not the text/html fallback meant for exported pages
        assert page.query_selector(".tinyml-widget-snapshot") is None

        # move weight with the keyboard: the plot now runs along weight, horsepower held
        weight = page.query_selector_all(".tinyml-slider")[1]
        before = page.inner_text(".tinyml-result .tinyml-reading")
        weight.query_selector(".noUi-handle").focus()
        for _ in range(8):
            page.keyboard.press("PageUp")
        target = weight.query_selector(".widget-readout").inner_text().strip()
        page.wait_for_function(
            "t => { const c = document.querySelector('.tinyml-plot-caption');"
            " const r = document.querySelector('.tinyml-result .tinyml-reading');"
            " return c && c.textContent.includes('along weight') && r.textContent.includes('weight ' + t); }",
            arg=target, timeout=15_000)
        moved = _reading(page)
        assert moved["agree"] == "1" and moved["board"] == moved["notebook"], moved
        assert moved["text"] != before
        caption = page.inner_text(".tinyml-plot-caption")
        assert "horsepower" in caption and "held" in caption and "int8" in caption
        assert len(page.query_selector_all(".tinyml-plot svg polyline.tinyml-line")) == 1
        assert len(page.query_selector_all(".tinyml-plot svg .tinyml-points circle")) == 78
        # the marker sits on the line: the board's answer is the int8 model's value there
        marker = page.eval_on_selector(".tinyml-plot svg .tinyml-marker",
                                       "m => [parseFloat(m.getAttribute('cx')), parseFloat(m.getAttribute('cy'))]")
        line = page.eval_on_selector(".tinyml-plot svg polyline.tinyml-line",
                                     "l => l.getAttribute('points').split(' ').map(p => p.split(',').map(Number))")
        nearest = min(line, key=lambda xy: abs(xy[0] - marker[0]))
        assert abs(nearest[0] - marker[0]) < 3 and abs(nearest[1] - marker[1]) < 4, (marker, nearest)

        page.query_selector(".tinyml-widget").scroll_into_view_if_needed()
        page.query_selector(".tinyml-widget").screenshot(path=str(SCREENSHOT_TWO))


def test_classifier_widget_shows_one_bar_per_class_the_winner_in_bold(lab):
    with _lab_page(lab, SCREENSHOT_CLASSES) as page:
        _open_widget(page, lab, "origin.ipynb", 7)
        tracks = _tracks(page)
        assert [t["label"] for t in tracks] == SEVEN
        assert max(t["x"] for t in tracks) - min(t["x"] for t in tracks) <= 2, tracks
        page.wait_for_selector(".tinyml-result .tinyml-class", timeout=15_000)

        def bars():
            return page.eval_on_selector_all(
                ".tinyml-result .tinyml-class",
                "els => els.map(e => ({name: e.dataset.class, p: parseFloat(e.dataset.p),"
                " weight: parseInt(getComputedStyle(e).fontWeight),"
                " width: e.querySelector('.tinyml-bar').getBoundingClientRect().width}))")

        first = bars()
        assert [b["name"] for b in first] == ["Europe", "Japan", "USA"]
        assert sum(b["p"] for b in first) == pytest.approx(1.0, abs=0.02)
        bold = [b["name"] for b in first if b["weight"] >= 600]
        assert bold == [max(first, key=lambda b: b["p"])["name"]], first
        for b in first:  # the bar's length is the probability (200 px for 1.0)
            assert abs(b["width"] - 200 * b["p"]) <= 1.5, b
        assert _reading(page)["agree"] == "1"
        assert len(page.query_selector_all(".tinyml-plot svg polyline.tinyml-line")) == 3

        # a light, economical car from the late seventies: the winner changes, the bars follow
        sliders = page.query_selector_all(".tinyml-slider")
        for index, key in [(0, "End"), (2, "Home"), (4, "Home"), (6, "End")]:
            sliders[index].query_selector(".noUi-handle").focus()
            page.keyboard.press(key)
        page.wait_for_function(
            "() => { const r = document.querySelector('.tinyml-result .tinyml-reading');"
            " return r && r.textContent.includes('model_year 82') && r.textContent.includes('mpg 46.6'); }",
            timeout=15_000)
        page.wait_for_timeout(300)
        moved = bars()
        assert _reading(page)["agree"] == "1"
        assert [b["name"] for b in moved if b["weight"] >= 600] == [max(moved, key=lambda b: b["p"])["name"]]
        assert moved != first
        assert "along model_year" in page.inner_text(".tinyml-plot-caption")

        page.query_selector(".tinyml-widget").scroll_into_view_if_needed()
        page.query_selector(".tinyml-widget").screenshot(path=str(SCREENSHOT_CLASSES))
