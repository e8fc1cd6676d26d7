"""One registry mechanism for every named family: datasets, models, face detectors, augmentations, TTA sets.

A :class:`Registry` is a ``dict`` (name → entry) that knows what it holds: ``register(name, obj)``
(or ``@register(name)`` on a builder) refuses a name twice, and ``get(name)`` raises
:class:`EmotkError` listing the known names. Families register on import of their own module; a
registry imports none of them. Training protocols are files (``emotk/protocols/*.yaml``), listed by
:func:`emotk.train.protocol.available`.
"""

from __future__ import annotations

from emotk.errors import EmotkError

class Registry(dict):
    def __init__(self, kind: str, hint: str = "", error: type[EmotkError] = EmotkError):
        super().__init__()
        self.kind, self.hint, self.error = kind, hint, error

    def register(self, name: str, obj=None):
        """``register(name, obj)``, or ``@register(name)`` on a function or class."""
        def put(o):
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = o
            return o

        return put if obj is None else put(obj)

    def get(self, name: str, default=None):  # noqa: D401 - dict.get with a helpful error instead of None
        """The entry of ``name``; an unknown name is an error listing the known ones."""
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self)) or '(none)'}."
                             + (f" {self.hint}" if self.hint else ""))
        return self[name]

    def names(self) -> list[str]:
        return sorted(self)

