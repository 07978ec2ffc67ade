"""Discovery of what the task files of a package define, so adding a task is adding files.

Two mechanisms, one rule (import every module of the package once, on first lookup, never list them):

- ``Registry``: functions registered by name (models, studies, synthetic-data writers, figures).
- ``package_getattr``: a package's ``__getattr__`` that finds a public name in whichever of its modules
  defines it, so a config's ``class_path: acda_lightning.tasks.NewTask`` resolves without a central
  import list in ``tasks/__init__.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType


def import_modules(package: str) -> list[ModuleType]:
    """Every public module of ``package`` (names starting with "_" are private), imported once."""
    root = importlib.import_module(package)
    return [
        importlib.import_module(f"{package}.{info.name}")
        for info in pkgutil.iter_modules(root.__path__)
        if not info.name.startswith("_")
    ]


def package_getattr(package: str) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package``: ``package.Name`` is the ``Name`` that one of its
    modules defines (not one it imports), found by importing them all; two definitions are an error."""

    def getattr_(name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        found = [
            module
            for module in import_modules(package)
            if getattr(getattr(module, name, None), "__module__", None) == module.__name__
        ]
        if not found:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if len(found) > 1:
            raise AttributeError(f"{package}.{name} is defined in {' and '.join(m.__name__ for m in found)}")
        return getattr(found[0], name)

    return getattr_


class Registry:
    """Functions registered by name from the modules of ``package`` (imported on first lookup)."""

    def __init__(self, package: str, kind: str):
        self.package = package
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._discovered = False

    def register(self, name: str | None = None, *aliases: str) -> Callable[[Callable], Callable]:
        """Register under ``name`` (default: the function's own name) and any ``aliases``."""

        def decorate(function: Callable) -> Callable:
            for key in (name or function.__name__, *aliases):
                if key in self._entries and self._entries[key] is not function:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._entries[key] = function
            return function

        return decorate

    def _discover(self) -> None:
        if not self._discovered:
            import_modules(self.package)
            self._discovered = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> Callable:
        self._discover()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._entries[name]

    def items(self) -> list[tuple[str, Callable]]:
        """Each registered function once, under its first name."""
        seen, items = set(), []
        for name in self.names():
            if self._entries[name] not in seen:
                seen.add(self._entries[name])
                items.append((name, self._entries[name]))
        return items
