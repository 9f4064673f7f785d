"""Short public module paths for modules that live deeper in the package tree.

``gometal.vision`` is ``gometal.data.vision``, ``gometal.layers`` is ``gometal.nn.layers``:
users import the short paths, the code lives in the layer that owns it. An import of a
short path (or of a module below it) returns the very module object of the long path,
so classes and module state are never duplicated, and a heavy module is still loaded
only when first imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Mapping
from types import ModuleType


class ModuleAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``<package>.<alias>[.<rest>]`` to ``<package>.<target>[.<rest>]``.

    Args:
        package: the package the short paths hang off, e.g. ``"gometal"``.
        aliases: short name -> target path relative to ``package``
            (``{"vision": "data.vision"}``).

    Example:
        >>> finder = ModuleAliasFinder("gometal", {"vision": "data.vision"})
        >>> finder.target_of("gometal.vision.transforms")
        'gometal.data.vision.transforms'
    """

    def __init__(self, package: str, aliases: Mapping[str, str]):
        self.package = package
        self.aliases = {
            f"{package}.{short}": f"{package}.{long}" for short, long in aliases.items()
        }
        # Each module's own spec, which the import system replaces with the alias's.
        self._real_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def target_of(self, fullname: str) -> str | None:
        """The long path behind ``fullname``, or ``None`` when it is not a short path.

        Args:
            fullname: a dotted module name.

        Returns:
            The module name to import instead, or ``None``.

        Example:
            >>> ModuleAliasFinder("gm", {"layers": "nn.layers"}).target_of("gm.nn") is None
            True
        """
        for short, long in self.aliases.items():
            if fullname == short or fullname.startswith(short + "."):
                return long + fullname[len(short) :]
        return None

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The import system's hook: a spec loaded by this finder for short paths."""
        if self.target_of(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """Imports the long path and hands its module to the import system."""
        target = self.target_of(spec.name)
        assert target is not None
        module = importlib.import_module(target)
        self._real_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Puts back the module's own spec, which the import system set to the alias's."""
        # ``module.__spec__`` is the alias's spec here; its name is the alias.
        real_spec = self._real_specs.pop(module.__spec__.name, None)
        if real_spec is not None:
            module.__spec__ = real_spec


def install_module_aliases(package: str, aliases: Mapping[str, str]) -> ModuleAliasFinder:
    """Puts a :class:`ModuleAliasFinder` first on ``sys.meta_path`` (once per package).

    Args:
        package: the package the short paths hang off.
        aliases: short name -> target path relative to ``package``.

    Returns:
        The installed finder.

    Example:
        >>> install_module_aliases("gometal", {"vision": "data.vision"})  # doctest: +SKIP
    """
    for finder in sys.meta_path:
        if isinstance(finder, ModuleAliasFinder) and finder.package == package:
            sys.meta_path.remove(finder)
            break
    # First: an editable install's finder still lists the modules at their old places.
    finder = ModuleAliasFinder(package, aliases)
    sys.meta_path.insert(0, finder)
    return finder
