"""Which firmware runtimes can run an int8 model, decided when it is quantized.

``%tinyml_quantize`` reports this per runtime, and ``%tinyml_flash`` refuses with
the same line before generating or compiling anything, so a model that
quantizes but cannot run on a board is known at once, with the reason.
"""
from __future__ import annotations

from .errors import ConvertError

RUNTIMES = ("native", "tflm")
TARGETS = (*RUNTIMES, "uno")


def problems(flatbuffer: bytes) -> dict[str, str | None]:
    """Per runtime (and for the Uno), ``None`` when it runs the model, else one line why not.

    native: a chain of Dense layers, each optionally followed by LOGISTIC or TANH, and an
    optional final SOFTMAX (``quant.plan_from_model``); tflm: the ops the sketch can register,
    per-tensor weights; uno: the native runtime within an Uno's flash and RAM.
    """
    from .codegen.fit import native_fit_problem
    from .codegen.tflm import _check_model, op_registrations
    from .quant import plan_from_model
    from .tflite_file import read_tflite

    model = read_tflite(flatbuffer)
    try:
        plan = plan_from_model(model)
    except ConvertError as exc:
        return {target: str(exc) for target in TARGETS}
    found: dict[str, str | None] = {"native": None, "tflm": None, "uno": native_fit_problem(plan)}
    try:
        op_registrations(model.op_names)
        _check_model(model, plan)
    except ConvertError as exc:
        found["tflm"] = str(exc)
    return found


def check(entry: dict, runtime: str) -> None:
    """Raise the saved reason when ``runtime`` cannot run the int8 model of a report entry."""
    reason = (entry.get("runtimes") or {}).get(runtime)
    if reason:
        raise ConvertError(f"the {runtime} runtime cannot run this model: {reason}")
