"""gometal: Keras-simple training over a compiled whole-step engine.

Example:
    >>> import gometal as gm
    >>> model = gm.ModelBuilder((64,)).dense(128).relu().dense(10).build(seed=0)
    >>> trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-3))
"""

__version__ = "0.1.0"

try:
    from . import _native  # noqa: F401  (loads _core first, for a clear error when unbuilt)
except ImportError as err:  # pragma: no cover - only without a built engine
    raise ImportError(
        "gometal's compiled engine (gometal._core) could not be imported. Build it with "
        "`pip install -e . --no-build-isolation` from the repository root. "
        f"Original error: {err}"
    ) from err

from . import layers, losses, metrics, ops, optim, schedulers, serialization
from .builder import ModelBuilder
from .layers.base import EmitContext
from .model import Model
from .runtime import get_num_threads, set_num_threads
from .serialization import load_model
from .tensor import Input, SymbolicTensor
from .trainer import StepResult, Trainer
from .training import callbacks
from .training.history import History

__all__ = [
    "EmitContext",
    "History",
    "Input",
    "Model",
    "ModelBuilder",
    "StepResult",
    "SymbolicTensor",
    "Trainer",
    "__version__",
    "callbacks",
    "datasets",
    "get_num_threads",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "onnx",
    "ops",
    "optim",
    "schedulers",
    "serialization",
    "set_num_threads",
    "vision",
    "viz",
]

# Imported on first use: they pull in heavy packages (Pillow; onnx; plotly and scipy).
_LAZY_SUBMODULES = ("datasets", "onnx", "vision", "viz")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gometal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
