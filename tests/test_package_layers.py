"""The package's layers import only downwards (``package_layers`` holds the order), the
check catches every kind of upward import, and what a lower layer calls of an upper one
goes through a provided function the upper layer fills in."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gometal as gm
from gometal.base.provided import ProvidedFunction
from package_layers import PACKAGE_ROOT, layer_violations


def test_every_import_follows_the_layer_order():
    violations = layer_violations()
    assert violations == [], "\n".join(str(v) for v in violations)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "gometal"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    assert layer_violations(copy) == []
    return copy


BAD_IMPORTS = [
    # (file, code appended, imported module, reason)
    (
        "nn/model.py",
        "def _save(model):\n    from ..io.serialization import save_model\n",
        "gometal.io.serialization",
        "layer 'io' (rank 4) is above 'nn' (2)",
    ),
    (
        "graph/composites.py",
        "from ..train import losses\n",
        "gometal.train.losses",
        "layer 'train' (rank 3) is above 'graph' (1)",
    ),
    (
        "train/fit.py",
        "if TYPE_CHECKING:\n    from ..viz.dashboard import Dashboard\n",
        "gometal.viz.dashboard",
        "layer 'viz' (rank 5) is above 'train' (3)",
    ),
    (
        "io/serialization/checkpoint.py",
        "def _images():\n    import gometal.data.vision\n",
        "gometal.data.vision",
        "layers 'io' and 'data' are siblings of rank 4",
    ),
    (
        "base/arrays.py",
        "from .. import __version__\n",
        "gometal",
        "the package root sits above every layer",
    ),
    (
        "train/trainer.py",
        "def _plots():\n    importlib.import_module('gometal.viz')\n",
        "gometal.viz",
        "layer 'viz' (rank 5) is above 'train' (3)",
    ),
]


@pytest.mark.parametrize(("file", "code", "target", "reason"), BAD_IMPORTS)
def test_the_check_fails_on_an_import_that_breaks_the_order(
    package_copy, file, code, target, reason
):
    path = package_copy / file
    lines_before = len(path.read_text().splitlines())
    path.write_text(path.read_text() + "\n\n" + code)
    violations = layer_violations(package_copy)
    assert len(violations) == 1, violations
    (violation,) = violations
    module = "gometal." + file.removesuffix(".py").replace("/", ".")
    assert (violation.module, violation.target, violation.reason) == (module, target, reason)
    assert violation.line > lines_before


def test_the_check_fails_on_a_module_outside_every_layer(package_copy):
    (package_copy / "helpers.py").write_text("VALUE = 1\n")
    (violation,) = layer_violations(package_copy)
    assert (violation.module, violation.reason) == (
        "gometal.helpers",
        "the module belongs to no layer",
    )


def python_sources(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def test_the_checked_source_is_what_this_interpreter_imports():
    # The check reads the source tree; an installed copy (CI installs without -e) must hold
    # the same modules with the same text, so the check speaks for what runs.
    imported = Path(gm.__file__).resolve().parent
    assert python_sources(imported) == python_sources(PACKAGE_ROOT)


def test_the_upper_layers_provide_what_the_lower_layers_call():
    from gometal.nn import provided as nn_provided
    from gometal.train import provided as train_provided

    functions = [
        nn_provided.save_model,
        nn_provided.load_weights,
        nn_provided.export_onnx,
        train_provided.save_checkpoint,
        train_provided.load_checkpoint,
        train_provided.export_json,
        train_provided.plots_callback,
    ]
    assert [f.provided for f in functions] == [True] * len(functions)


def test_a_function_nobody_provided_names_its_provider():
    export = ProvidedFunction("Model.export_tflite", "gometal.io.tflite")
    with pytest.raises(RuntimeError, match=r"Model.export_tflite is provided by gometal.io.tflite"):
        export("model.tflite")
    with pytest.raises(TypeError, match="must be provided as a callable, got 3"):
        export.provide(3)
    export.provide(lambda path: f"wrote {path}")
    assert export("model.tflite") == "wrote model.tflite"


def test_short_module_paths_are_the_layered_modules():
    code = textwrap.dedent(
        """
        import sys
        from gometal.onnx.importer import OnnxImportError
        import gometal.io.onnx.importer as importer
        import gometal.vision, gometal.data.vision, gometal.layers, gometal.nn.layers
        import gometal.serialization
        from importlib import resources
        print(OnnxImportError is importer.OnnxImportError)
        print(gometal.vision is gometal.data.vision and gometal.layers is gometal.nn.layers)
        print(sys.modules["gometal.serialization"].__spec__.name)
        print(resources.files("gometal.serialization").joinpath("checkpoint_schema.json").is_file())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "gometal.io.serialization", "True"]
