"""The board slider in a real JupyterLab 4, driven by headless Chromium through Playwright.

A JupyterLab server is started on a free localhost port with a temporary root folder;
the page opens a notebook that flashes a trained model to the virtual Uno (simavr) and
shows ``%tinyml_predict --widget``. The test drags the slider like a user would and
waits until the board's answer for the new value is shown and equals the notebook's own
prediction. A screenshot is saved to /tmp/ipytinyml_widget.png.

Needs JupyterLab, Playwright's Python package and Debian's Chromium (``scripts/setup``
installs them; ``playwright install`` is never used). Skipped when Chromium is absent.
"""
from __future__ import annotations

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

CHROMIUM = os.environ.get("IPYTINYML_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path("/tmp/ipytinyml_widget.png")
TOKEN = "ipytinyml-widget-test"
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

    home = tmp_path_factory.mktemp("lab")
    tm.train(name="hp_mpg", root=home / "tinyml", epochs=200)
    tm.quantize(name="hp_mpg", root=home / "tinyml")
    nbformat.write(_notebook([
        "%load_ext ipytinyml",
        "%tinyml_flash --name hp_mpg --board sim",
        "%tinyml_predict --widget",
    ]), home / "slider.ipynb")

    settings = home / ".lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / ".lab-workspaces"),
               JUPYTER_CONFIG_DIR=str(home / ".jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(home / ".jupyter-runtime"),
               TF_CPP_MIN_LOG_LEVEL="3")
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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{lab['base']}/lab/tree/slider.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
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
        except Exception:
            page.screenshot(path=str(SCREENSHOT.with_name("ipytinyml_widget_failure.png")))
            outputs = page.eval_on_selector_all(".jp-OutputArea-output", "els => els.map(e => e.innerText)")
            print("cell outputs at failure:", *outputs, sep="\n  ")
            raise
        finally:
            browser.close()
