"""gometal: Keras-simple training over a compiled whole-step engine.

The package is a stack of layers, each a folder that imports only the folders below it:
``base`` (with ``_native``/``_core``) → ``graph`` → ``nn`` → ``train`` → ``io`` and
``data`` → ``viz`` → ``apps``. This module sits on top: it gathers the public ``gm.*``
names and keeps the short module paths (``gometal.layers``, ``gometal.vision``, ...)
pointing into the tree.

Example:
    >>> import gometal as gm
    >>> model = gm.ModelBuilder((64,)).dense(128).relu().dense(10).build(seed=0)
    >>> trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-3))
"""

from .base.version import __version__

try:
    from . import _native  # noqa: F401  (loads _core first, for a clear error when unbuilt)
except ImportError as err:  # pragma: no cover - only without a built engine
    raise ImportError(
        "gometal's compiled engine (gometal._core) could not be imported. Build it with "
        "`pip install -e . --no-build-isolation` from the repository root. "
        f"Original error: {err}"
    ) from err

# Loaded at import: the int8 layers must be registered before a quantized model file loads.
from . import quantization
from .base.module_aliases import install_module_aliases as _install_module_aliases
from .base.runtime import get_num_threads, set_num_threads
from .io import serialization
from .io.serialization import load_model
from .nn import layers, ops
from .nn import provided as _nn_provided
from .nn.builder import ModelBuilder
from .nn.layers.base import EmitContext
from .nn.model import Model
from .nn.tensor import Input, SymbolicTensor
from .quantization import quantize
from .train import callbacks, losses, metrics, optim, schedulers
from .train import provided as _train_provided
from .train.history import History
from .train.session import TrainingSession
from .train.trainer import StepResult, Trainer

__all__ = [
    "EmitContext",
    "History",
    "Input",
    "Model",
    "ModelBuilder",
    "StepResult",
    "SymbolicTensor",
    "Trainer",
    "TrainingSession",
    "__version__",
    "callbacks",
    "datasets",
    "distributed",
    "get_num_threads",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "onnx",
    "ops",
    "optim",
    "quantization",
    "quantize",
    "schedulers",
    "serialization",
    "set_num_threads",
    "vision",
    "viz",
]

# The public module paths of code that lives in the layered tree.
PUBLIC_MODULE_PATHS = {
    "callbacks": "train.callbacks",
    "cli": "apps.cli",  # the console script of installs made before the tree had layers
    "datasets": "data.datasets",
    "initializers": "nn.initializers",
    "layers": "nn.layers",
    "losses": "train.losses",
    "metrics": "train.metrics",
    "onnx": "io.onnx",
    "ops": "nn.ops",
    "optim": "train.optim",
    "regularizers": "nn.regularizers",
    "schedulers": "train.schedulers",
    "serialization": "io.serialization",
    "training": "train",
    "vision": "data.vision",
}
_install_module_aliases(__name__, PUBLIC_MODULE_PATHS)


@_train_provided.plots_callback.provide
def _plots_callback(plots: str, plots_dir: object, validation: object) -> object:
    # fit(plots=...) sits in train, below viz: the dashboard is wired in here, and viz
    # (plotly, scipy) loads only when a fit asks for plots.
    from .viz.dashboard import dashboard_for_fit

    return dashboard_for_fit(plots, plots_dir, validation)


@_nn_provided.generate_tokens.provide
def _generate_tokens(model: Model, *args: object) -> object:
    # Model.generate sits in nn, below models: generation loads when a model first asks.
    from .models.generation import generate

    return generate(model, *args)


# Imported on first use: they pull in heavy packages (Pillow; onnx; plotly and scipy).
_LAZY_SUBMODULES = (
    "datasets",
    "distributed",
    "models",
    "onnx",
    "serving",
    "text",
    "vision",
    "viz",
)
# Functions of lazily imported submodules: name -> (submodule, attribute).
_LAZY_FUNCTIONS = {"serve": ("serving", "serve")}


def __getattr__(name: str):
    import importlib

    if name in _LAZY_SUBMODULES or name in PUBLIC_MODULE_PATHS:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_FUNCTIONS:
        module, attribute = _LAZY_FUNCTIONS[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module 'gometal' has no attribute {name!r}")


def __dir__() -> list[str]:
    lazy = set(_LAZY_SUBMODULES) | set(_LAZY_FUNCTIONS) | set(PUBLIC_MODULE_PATHS)
    return sorted(set(globals()) | lazy)
