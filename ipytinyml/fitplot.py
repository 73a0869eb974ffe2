"""The training magic's plot: a one-feature model's fit line over its test data, as PNG.

Imports matplotlib (optional) and, for ``trained_fit_png``, the saved Keras model, so
TensorFlow: the magic calls it after training, when TensorFlow is loaded anyway.
"""
from __future__ import annotations

import io


def fit_plot_png(x_test, y_test, x_line, y_line, *, xlabel: str, ylabel: str,
                 title: str | None = None) -> bytes | None:
    """Test points and a fit line as PNG bytes (matplotlib's Agg canvas; no pyplot state).

    Returns None when matplotlib is not installed (the plot is optional).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(5.0, 3.2), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(x_test, y_test, s=12, alpha=0.6, label="test data")
    ax.plot(x_line, y_line, color="C3", linewidth=2, label="model")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def trained_fit_png(name: str, root) -> bytes | None:
    """The saved Keras model's fit line over its saved test data (one-feature models only)."""
    import numpy as np

    from . import artifacts
    from . import training as train_mod

    folder = artifacts.model_dir(root, name)
    report = artifacts.read_report(folder)
    data = report.get("data", {})
    if len(data.get("features", [])) != 1:
        return None
    split = artifacts.load_split(folder)
    model = artifacts.load_keras(folder)
    xs = np.concatenate([split["train_x"][:, 0], split["test_x"][:, 0]])
    grid = np.linspace(float(xs.min()), float(xs.max()), 200, dtype=np.float32).reshape(-1, 1)
    line = train_mod.predict(model, grid)[:, 0]
    return fit_plot_png(split["test_x"][:, 0], split["test_y"][:, 0], grid[:, 0], line,
                        xlabel=data["features"][0], ylabel=data.get("label", ""),
                        title=f"{name}: test data and fit")
