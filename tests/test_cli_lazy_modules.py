"""`import gometal as gm` reaches gm.vision, gm.datasets, gm.viz, gm.onnx, gm.models and gm.serve
(the inference server), on first use."""

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEAVY_MODULES = ["gometal.vision", "gometal.datasets", "gometal.viz", "gometal.onnx", "PIL"]
HEAVY_MODULES += ["onnx", "plotly", "scipy", "gometal.serving", "gometal.models", "grpc"]


def _run_python(code):
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_gometal_loads_none_of_the_heavy_modules():
    loaded = _run_python(
        "import json, sys\n"
        "import gometal\n"
        f"print(json.dumps([name for name in {HEAVY_MODULES!r} if name in sys.modules]))\n"
    )
    assert loaded == []


def test_submodules_are_attributes_listed_by_dir():
    found = _run_python(
        "import json\n"
        "import gometal as gm\n"
        "listed = [name in dir(gm) for name in ('vision', 'datasets', 'viz', 'onnx')]\n"
        "reached = [gm.vision.DataLoader, gm.vision.ImageFolderDataset,\n"
        "           gm.datasets.write_digits_folder, gm.viz.VisualizationCollector, gm.onnx.load]\n"
        "from gometal.datasets import write_digits_folder\n"
        "from gometal.onnx import load\n"
        "from gometal.vision import DataLoader, ImageFolderDataset\n"
        "from gometal.viz import VisualizationCollector\n"
        "imported = [DataLoader, ImageFolderDataset, write_digits_folder,\n"
        "            VisualizationCollector, load]\n"
        "print(json.dumps({'listed': listed,\n"
        "                  'same': [a is b for a, b in zip(reached, imported)]}))\n"
    )
    assert found == {"listed": [True] * 4, "same": [True] * 5}


def test_unknown_attributes_still_raise_attribute_error():
    message = _run_python(
        "import json\n"
        "import gometal as gm\n"
        "try:\n"
        "    gm.no_such_module\n"
        "except AttributeError as err:\n"
        "    print(json.dumps(str(err)))\n"
    )
    assert message == "module 'gometal' has no attribute 'no_such_module'"


def test_gm_serve_loads_the_server_on_first_use():
    found = _run_python(
        "import json, sys\n"
        "import gometal as gm\n"
        "before = ['gometal.serving' in sys.modules, 'gometal.models' in sys.modules]\n"
        "from gometal.serving import serve\n"
        "print(json.dumps({'before': before, 'serve': gm.serve is serve,\n"
        "                  'listed': 'serve' in dir(gm)}))\n"
    )
    assert found == {"before": [False, False], "serve": True, "listed": True}


def test_every_gm_name_in_the_readme_resolves():
    names = sorted(set(re.findall(r"\bgm(?:\.[A-Za-z_]\w*)+", README.read_text())))
    assert "gm.vision.DataLoader" in names
    missing = _run_python(
        "import json\n"
        "import gometal as gm\n"
        "missing = []\n"
        f"for dotted in {names!r}:\n"
        "    obj = gm\n"
        "    for part in dotted.split('.')[1:]:\n"
        "        if not hasattr(obj, part):\n"
        "            missing.append(dotted)\n"
        "            break\n"
        "        obj = getattr(obj, part)\n"
        "print(json.dumps(missing))\n"
    )
    assert missing == []
