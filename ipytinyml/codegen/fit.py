"""Will a model fit the board? Answered from the model plan, before any compiler runs.

The figures are the sketch as ``tm.flash`` builds it for an Uno (BENCHMARKS.md, footprint):
the Arduino core, Serial and the protocol take about 5.5 KB of flash and 420 B of RAM;
each Dense layer adds its int8 weights, a few bytes per unit of tables and its code,
and the activations take two ping-pong buffers. avr-gcc cannot index an object past
32,767 bytes, so one layer's weight table must stay below that whatever the flash.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..quant import ModelPlan


@dataclass(frozen=True)
class BoardLimits:
    name: str
    flash: int  # bytes a sketch may use (the bootloader's share taken out)
    ram: int
    max_object: int | None  # largest array the compiler can index, bytes


UNO = BoardLimits(name="Arduino Uno", flash=32_256, ram=2_048, max_object=32_767)
SKETCH_FLASH = 5_600  # core + Serial + protocol + model code skeleton
SKETCH_RAM = 420  # Serial buffers, protocol line buffer and state
STACK_RESERVE = 256
FLASH_PER_UNIT = 8  # per-channel requantization tables, bias
FLASH_PER_LAYER = 260  # one layer's kernel code


FLASH_PER_TABLE_OP = 256 + 40  # LOGISTIC/TANH: a 256-entry table and the lookup loop
FLASH_CLASS_LINE = 130  # a classifier's human answer beside its names (origin classifier: +144 B, 19 of them names)
FLASH_SOFTMAX = 2_000  # SOFTMAX code (reciprocal, 32-bit products; measured 1,970 B), plus 4 B per exp table entry


def _post_flash(layer) -> int:
    from ..quant import SoftmaxLayer

    if layer.post is None:
        return 0
    if isinstance(layer.post, SoftmaxLayer):
        entries = min(layer.activation_max - layer.activation_min, -layer.post.diff_min) + 1
        return FLASH_SOFTMAX + 4 * entries
    return FLASH_PER_TABLE_OP


def native_footprint(plan: ModelPlan, classes=None) -> tuple[int, int]:
    """Estimated ``(flash, ram)`` bytes of the native sketch for ``plan`` (``classes``: a
    classifier's names, printed by the human answer from a table in flash)."""
    flash = SKETCH_FLASH + sum(layer.n_in * layer.n_out + FLASH_PER_UNIT * layer.n_out + FLASH_PER_LAYER
                               + _post_flash(layer) for layer in plan.layers)
    if classes:
        from .classes import board_names
        flash += FLASH_CLASS_LINE + sum(len(name) + 1 for name in board_names(classes))
    widths = [layer.n_out for layer in plan.layers[:-1]]
    buffers = sum(sorted(widths, reverse=True)[:2])
    return flash, SKETCH_RAM + buffers + plan.n_inputs + plan.n_outputs


def native_fit_problem(plan: ModelPlan, limits: BoardLimits = UNO, classes=None) -> str | None:
    """One line saying why ``plan`` (with a classifier's ``classes``) does not fit ``limits``,
    or None when it fits."""
    if limits.max_object is not None:
        for i, layer in enumerate(plan.layers):
            table = layer.n_in * layer.n_out
            if table > limits.max_object:
                return (f"layer {i + 1} ({layer.n_in}->{layer.n_out}) has {table:,} weights, past the "
                        f"{limits.max_object:,}-byte limit of one table on the {limits.name}; "
                        "use fewer units")
    flash, ram = native_footprint(plan, classes)
    if flash > limits.flash:
        return (f"the sketch needs about {flash:,} B of flash, the {limits.name} has {limits.flash:,} B; "
                "use fewer or smaller layers")
    if ram + STACK_RESERVE > limits.ram:
        return (f"the sketch needs about {ram:,} B of RAM plus {STACK_RESERVE} B of stack, the "
                f"{limits.name} has {limits.ram:,} B; use narrower layers")
    return None
