"""Name -> function registries filled by the modules of a package, found without a central list.

A task adds a file (its study, its synthetic-data writer) and registers its function there; the
registry imports every module of the package once, so no shared file changes when a task lands.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable


class Registry:
    """Functions registered by name from the modules of ``package`` (imported on first lookup)."""

    def __init__(self, package: str, kind: str):
        self.package = package
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._discovered = False

    def register(self, name: str, *aliases: str) -> Callable[[Callable], Callable]:
        """Register under ``name`` and any ``aliases`` (e.g. the task's config folder name)."""

        def decorate(function: Callable) -> Callable:
            for key in (name, *aliases):
                if key in self._entries and self._entries[key] is not function:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._entries[key] = function
            return function

        return decorate

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
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
