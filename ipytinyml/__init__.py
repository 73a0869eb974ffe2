"""ipytinyml: from data to a model running on an Arduino (or a simulated Uno) and back.

In a notebook::

    %load_ext ipytinyml
    %%tinyml_train --data autompg --features horsepower --label mpg --name hp_mpg
    %tinyml_quantize
    %tinyml_flash
    %tinyml_predict 130

The same steps as plain Python: ``tm.train``, ``tm.quantize``, ``tm.flash``,
``tm.evaluate_on_board``. ``python -m ipytinyml.examples [DEST]`` (or
``tm.copy_examples(dest)``) copies the example notebooks. Importing this package is cheap: TensorFlow is only
imported by the functions that need it.
"""
from .errors import ConvertError, DataError, LinkError, TinyMLError, ToolchainError

__version__ = "0.1.0"

_API = ("train", "quantize", "flash", "evaluate_on_board", "last_model", "load_split", "tflite_path")

__all__ = ["TinyMLError", "DataError", "ConvertError", "ToolchainError", "LinkError",
           "load_ipython_extension", "unload_ipython_extension", "copy_examples", *_API]


def __getattr__(name):
    if name in _API:
        from . import api
        return getattr(api, name)
    if name == "copy_examples":  # the example notebooks, for a pip install: see ipytinyml.examples
        from .examples import copy_examples
        return copy_examples
    raise AttributeError(f"module 'ipytinyml' has no attribute {name!r}")


def load_ipython_extension(ipython):
    from .magics import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as unload
    unload(ipython)
