"""One registry mechanism: a named table of things (protocols, TTA view sets, augmentations, …).

``Registry("protocol")`` is a dict-like table filled by ``register(name, obj)`` (or used as a
decorator); ``get(name)`` raises :class:`EmotkError` listing the known names. Families register on
import of their own package; a registry imports none of them.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from emotk.errors import EmotkError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, hint: str = ""):
        self.kind, self.hint, self._items = kind, hint, {}

    def register(self, name: str, obj: T | None = None):
        """``register(name, obj)``, or ``@register(name)`` on a function or class."""
        def put(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = o
            return o

        return put if obj is None else put(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise EmotkError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items)) or '(none)'}."
                             + (f" {self.hint}" if self.hint else ""))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
