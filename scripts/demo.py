#!/usr/bin/env python3
"""Run examples/autompg_virtual_board.ipynb headless and print what it measured.

The notebook (and the example data) is copied to a fresh working folder, run
top to bottom in a real Jupyter kernel with nbclient (the model is trained,
quantized, compiled for the virtual Arduino Uno, run in simavr and queried over
its serial port), and the executed copy is saved there. The script then prints
the numbers from the model's ``report.json``: float32 and int8 test MAE,
board/notebook parity, device time per inference and serial throughput.

    python scripts/demo.py                 # temporary folder, removed afterwards
    python scripts/demo.py --keep /tmp/d   # keep the executed notebook and artifacts there

Exits non-zero if any cell raises. ``execute_notebooks`` is also used by the
notebook tests (tests/test_notebooks.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
MAIN_NOTEBOOK = EXAMPLES / "autompg_virtual_board.ipynb"


class NotebookFailed(RuntimeError):
    """A cell raised; ``str()`` names the cell and the error."""


def prepare(notebook: Path, workdir: Path) -> Path:
    """Copy ``notebook`` and the examples' data folder into ``workdir``; return the copy's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / notebook.name
    shutil.copyfile(notebook, target)
    data = notebook.parent / "data"
    if data.is_dir() and not (workdir / "data").exists():
        shutil.copytree(data, workdir / "data")
    return target


def _client(path: Path, timeout: int, kernel: str):
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    from traitlets.config import Config
    config = Config()
    # local sockets (absolute paths: the kernel runs in the notebook's folder): no TCP ports to
    # collide on, and no "unencrypted TCP" warning from the kernel
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(path.parent.resolve() / ".kernel-ipc")
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True,
                                     record_timing=True, config=config,
                                     resources={"metadata": {"path": str(path.parent)}})
    return nb, client, env


def cell_errors(nb) -> list[str]:
    """One line per cell that failed: 'cell N (first line): Ename: message'.

    A magic's UsageError is not an "error" output: IPython prints it as one line on
    stderr, so those lines count too.
    """
    errors = []
    for i, cell in enumerate(nb.cells):
        where = f"cell {i} ({cell.source.splitlines()[0][:60] if cell.source else ''!r})"
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"{where}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                errors += [f"{where}: {line}" for line in out.get("text", "").splitlines()
                           if line.startswith("UsageError:")]
    return errors


async def _run_all(jobs, timeout: int, kernel: str):
    clients = [_client(path, timeout, kernel) for path in jobs]

    async def one(nb, client, env):
        await client.async_execute(env=env)  # extra arguments go to the kernel manager's start_kernel
        return nb

    return await asyncio.gather(*(one(*job) for job in clients))


def execute_notebooks(notebooks, workdir: Path, *, timeout: int = 600, kernel: str = "python3",
                      check: bool = True):
    """Run notebooks concurrently, each in its own kernel with ``workdir/<stem>`` as cwd.

    Returns the executed notebooks (also saved as ``executed_<name>`` beside each copy);
    raises ``NotebookFailed`` when ``check`` and a cell raised.
    """
    import nbformat

    paths = [prepare(Path(nb), Path(workdir) / Path(nb).stem) for nb in notebooks]
    executed = asyncio.run(_run_all(paths, timeout, kernel))
    problems = []
    for path, nb in zip(paths, executed):
        nbformat.write(nb, path.parent / f"executed_{path.name}")
        problems += [f"{path.name}: {e}" for e in cell_errors(nb)]
    if check and problems:
        raise NotebookFailed("; ".join(problems))
    return executed


def cell_seconds(cell) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def summary(report: dict) -> dict:
    """The demo's key numbers from a report.json."""
    variants = report.get("variants", {})
    parity = report.get("parity", {})
    latency = report.get("latency", {})
    board = report.get("board", {})
    return {
        "float32_mae": variants.get("float32", {}).get("mae"),
        "int8_mae": variants.get("int8", {}).get("mae"),
        "board_mae": report.get("mae"),
        "parity_matched": parity.get("matched"), "parity_total": parity.get("total"),
        "raw_matched": parity.get("raw_matched"), "raw_total": parity.get("raw_total"),
        "oracle": parity.get("oracle"),
        "device_us": latency.get("device_us"), "device_cycles": latency.get("device_cycles"),
        "predictions_per_s": latency.get("predictions_per_s"),
        "wire_bound_per_s": latency.get("wire_bound_per_s"),
        "flash_bytes": board.get("flash_bytes"), "ram_bytes": board.get("ram_bytes"),
    }


def _fmt(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def print_summary(s: dict, nb, wall: float) -> None:
    print("\nipytinyml demo: AutoMPG horsepower -> mpg on the virtual Arduino Uno (simavr)")
    print(f"  float32 test MAE   {_fmt(s['float32_mae'], '.3f', ' mpg')}")
    diff = None if s["int8_mae"] is None or s["float32_mae"] is None else s["int8_mae"] - s["float32_mae"]
    print(f"  int8 test MAE      {_fmt(s['int8_mae'], '.3f', ' mpg')}  ({_fmt(diff, '+.3f')} vs float32)")
    print(f"  MAE on the board   {_fmt(s['board_mae'], '.3f', ' mpg')}")
    if s["parity_total"]:
        pct = 100.0 * s["parity_matched"] / s["parity_total"]
        raw = (f"; all int8 inputs {s['raw_matched']}/{s['raw_total']}" if s.get("raw_total") else "")
        print(f"  parity             {s['parity_matched']}/{s['parity_total']} test rows ({pct:.0f} %){raw}"
              f"  [oracle: {s['oracle'] or 'n/a'}]")
    cycles = f" ({s['device_cycles']:,.0f} cycles)" if s["device_cycles"] else ""
    print(f"  device time        {_fmt(s['device_us'], ',.0f', ' µs')} per inference{cycles}")
    share = (f" ({100.0 * s['predictions_per_s'] / s['wire_bound_per_s']:.0f} % of the "
             f"{s['wire_bound_per_s']:,.0f}/s wire bound)") if s["predictions_per_s"] and s["wire_bound_per_s"] else ""
    print(f"  throughput         {_fmt(s['predictions_per_s'], ',.0f', ' predictions/s')}{share}")
    if s["flash_bytes"] is not None:
        print(f"  sketch             {s['flash_bytes']:,} B flash, {_fmt(s['ram_bytes'], ',')} B RAM")
    timed = [(c.source.splitlines()[0][:32], cell_seconds(c)) for c in nb.cells
             if c.cell_type == "code" and c.source.strip() and cell_seconds(c) is not None]
    print("  cell times")
    for label, seconds in timed:
        print(f"    {seconds:6.1f} s  {label}")
    first = next((i for i, (label, _) in enumerate(timed)
                  if label.startswith("%tinyml_predict") and "--" not in label), None)
    if first is not None:
        print(f"  first board answer {sum(t for _, t in timed[:first + 1]):.1f} s after the first cell started")
    print(f"  wall time          {wall:.1f} s (kernel start included)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep everything there")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: 600)")
    parser.add_argument("--notebook", default=str(MAIN_NOTEBOOK), help="notebook to run")
    args = parser.parse_args(argv)

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ipytinyml-demo-"))
    notebook = Path(args.notebook)
    print(f"running {notebook.name} in {workdir / notebook.stem} ...", flush=True)
    start = time.perf_counter()
    try:
        (nb,) = execute_notebooks([notebook], workdir, timeout=args.timeout, check=False)
        wall = time.perf_counter() - start
        errors = cell_errors(nb)
        if errors:
            print("the notebook failed:", *errors, sep="\n  ", file=sys.stderr)
            print(f"executed notebook: {workdir / notebook.stem / ('executed_' + notebook.name)}",
                  file=sys.stderr)
            return 1
        reports = sorted((workdir / notebook.stem / "tinyml").glob("*/report.json"),
                         key=lambda p: p.stat().st_mtime)
        if not reports:
            print("the notebook wrote no report.json", file=sys.stderr)
            return 1
        print_summary(summary(json.loads(reports[-1].read_text())), nb, wall)
        if args.keep:
            print(f"  executed notebook  {workdir / notebook.stem / ('executed_' + notebook.name)}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
