"""A registry of named entries (target APIs, built-in columns): the built-in ones, loaded from their modules when the
registry is made, and ones a test or a plugin adds. Ground floor: imports nothing of refimpl."""
from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, modules: tuple[str, ...], attr: str):
        """``kind`` names an entry in messages ("API", "column"); each of ``modules`` (under ``package``) holds
        one built-in entry as its attribute ``attr``, registered in that order."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        for m in modules:
            self.register(getattr(importlib.import_module(f"{package}.{m}"), attr))
        self._built_in = frozenset(self._entries)

    def register(self, entry: T) -> T:
        """Add ``entry`` (a test's own, say); its name must be new."""
        name = getattr(entry, "name")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry a test registered (the built-in ones stay)."""
        if name in self._built_in:
            raise ValueError(f"{name!r} is built in")
        if name in self._entries:
            del self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries.values()))
