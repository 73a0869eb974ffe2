"""A classifier's human answer on the board: class names and the int8 decision rule.

The board prints ``origin: Japan (0.82)`` for a classifier (docs/protocol.md, Human
lines). Everything it needs is computed here, once, in Python, so the firmware only
compares integers and prints strings from flash:

* the names as the board prints them (:func:`board_name`): protocol lines are printable
  ASCII, so names are folded to ASCII, one word, at most ``NAME_MAX`` characters, and kept
  distinct;
* the rule that picks the class, derived from the notebook's own rule
  (``ipytinyml.metrics.top_class`` on the float32 dequantized scores) applied to every int8
  value: argmax with the first index winning a tie (dequantization is increasing, so this
  is the argmax of the int8 scores), or for one sigmoid output the smallest int8 value
  whose float32 probability is ``> 0.5`` (``min_q``);
* for one sigmoid output, the integer ``one_k`` with ``scale * one_k == 1`` exactly, so the
  probability of class 0, ``1 - p``, is ``scale * (one_k - (q - zero_point))`` and prints
  with the same exact dequantization as every other value.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import ConvertError
from ..quant import TensorQuant, dequantize

NAME_MAX = 24  # characters of one class name on the board; longer names end in '~'


def _ascii_word(name: str) -> str:
    # NFKD splits accented letters into letter + combining mark, so "Zürich" keeps its u.
    text = "".join(c for c in unicodedata.normalize("NFKD", str(name)) if not unicodedata.combining(c))
    # ',' separates inferences on the line and a space would split the name: both become '_'
    word = "".join(c if 33 <= ord(c) < 127 and c != "," else "_" for c in text)
    if len(word) > NAME_MAX:
        word = word[:NAME_MAX - 1] + "~"
    return word


def board_names(classes) -> list[str]:
    """The class names as the board prints them, in class-index order.

    Each is folded to printable ASCII (accents dropped, anything else, spaces and commas
    as ``_``) and cut to ``NAME_MAX`` characters (the last one ``~``). A name left without
    a letter or digit, or equal to an earlier class's, becomes ``class_<index>``, so every
    class still reads differently.

    >>> board_names(["Europe", "Zürich", "New York", "日本", "a" * 30, "Europe"])
    ['Europe', 'Zurich', 'New_York', 'class_3', 'aaaaaaaaaaaaaaaaaaaaaaa~', 'class_5']
    """
    out: list[str] = []
    for k, name in enumerate(classes):
        word = _ascii_word(name)
        if not any(c.isalnum() for c in word) or word in out:
            word = f"class_{k}"
        out.append(word)
    return out


def names_macro(names, indent: str = "    ") -> str:
    """The ``TINYML_CLASS_NAMES`` initializer: one C string literal per line, each name
    ended by ``\\0``, continued as one macro (a table in flash, read like the protocol's
    error texts). Names are already :func:`board_names` (printable ASCII); quotes,
    backslashes and ``?`` (trigraphs) are escaped. A name never runs into the next one's
    leading digit: each literal is separate, and escapes are resolved before literals join.

    >>> print(names_macro(["A", "1st", 'say "hi"?']))
        "A\\0" \\
        "1st\\0" \\
        "say \\"hi\\"\\077"
    """
    from . import cgen

    lines = []
    for k, name in enumerate(names):
        last = k == len(names) - 1
        literal = cgen.string_literal(name)
        if not last:
            literal = literal[:-1] + '\\0"'
        lines.append(f"{indent}{literal}" + ("" if last else " \\"))
    return "\n".join(lines)


@dataclass(frozen=True)
class ClassRule:
    names: tuple[str, ...]  # as the board prints them
    min_q: int | None  # one sigmoid output: class 1 when q >= min_q (128: never)
    one_k: int | None  # one sigmoid output: scale * one_k == 1 exactly


def sigmoid_min_q(output: TensorQuant) -> int:
    """The smallest int8 ``q`` the notebook calls class 1 (``top_class``: float32 probability
    ``> 0.5``), 128 if none; every larger ``q`` is class 1 too (dequantization is increasing).

    >>> sigmoid_min_q(TensorQuant(scale=1 / 256, zero_point=-128))  # q = 0 is exactly 0.5
    1
    """
    from ..metrics import top_class

    p = dequantize(np.arange(-128, 128), output)
    ones = [q for q, v in zip(range(-128, 128), p) if top_class([v])[0] == 1]
    if ones and ones != list(range(ones[0], 128)):
        raise ConvertError("the sigmoid output's classes are not split by one threshold")
    return ones[0] if ones else 128


def class_rule(classes, output: TensorQuant, n_outputs: int) -> ClassRule:
    """What the board needs to name the class of ``n_outputs`` int8 scores quantized with
    ``output``: softmax (one output per class) or one sigmoid output for two classes."""
    classes = [str(c) for c in classes]
    scale = Fraction(float(output.scale))
    if scale <= 0:
        raise ConvertError(f"the output scale {float(output.scale)!r} is not positive")
    if n_outputs == len(classes) >= 2:
        return ClassRule(names=tuple(board_names(classes)), min_q=None, one_k=None)
    if n_outputs == 1 and len(classes) == 2:
        one_k = 1 / scale
        zp = int(output.zero_point)
        # class 0's probability 1 - p = scale * (one_k - k), k = q - zp >= 0, printed like any
        # score: TFLite's LOGISTIC output (scale 1/256, zero point -128) gives one_k - k in 1..256
        if one_k.denominator != 1 or zp != -128 or one_k > 256:
            raise ConvertError(f"a binary classifier's sigmoid output must be quantized as TFLite's "
                               f"LOGISTIC (scale 1/256, zero point -128), not scale "
                               f"{float(output.scale)!r}, zero point {zp}")
        return ClassRule(names=tuple(board_names(classes)), min_q=sigmoid_min_q(output),
                         one_k=int(one_k))
    raise ConvertError(f"the model has {n_outputs} output(s) for {len(classes)} classes: a classifier "
                       "needs one output per class (softmax), or one sigmoid output for two classes")


def header_context(classes, output: TensorQuant, n_outputs: int) -> dict:
    """Template values for the class block of ``tinyml_model.h`` (``classes`` None: no block)."""
    from . import cgen

    if not classes:
        return {"classes": None}
    rule = class_rule(classes, output, n_outputs)
    return {"classes": {
        "n": len(rule.names),
        "names": names_macro(rule.names),
        "min_q": None if rule.min_q is None else cgen.int_literal(rule.min_q, "int16_t"),
        "one_k": None if rule.one_k is None else cgen.int_literal(rule.one_k, "int16_t"),
    }}
