"""One registry helper: a dict plus a decorator, a lookup and a listing (in the style of timm).

Formats, models, datasets, augmentations, search strategies and exporters each hold one
:class:`Registry`. Lookups of an unknown name raise :class:`UnknownNameError` (a ``ValueError``) with
one line naming the value and the allowed ones, e.g. ``unknown model 'resnet'; allowed: cnn, mlp``.
Registering a taken name raises ``ValueError``, so two files cannot silently shadow each other.

This module imports nothing from lowbit: every floor may use it.
"""
from __future__ import annotations

from typing import Callable, Iterator


class UnknownNameError(ValueError):
    """A name that is not in a registry."""


class Registry:
    """Named objects of one kind (``what`` names the kind in messages: "model", "dataset"...).

    ``ordered=True`` lists names in registration order (default: sorted). ``allowed`` overrides the
    text after "allowed: " in the unknown-name message (a callable, for grammars wider than the keys).
    """

    def __init__(self, what: str, *, ordered: bool = False, allowed: Callable[[], str] | None = None):
        self.what = what
        self._items: dict[str, object] = {}
        self._ordered = ordered
        self._allowed = allowed

    def add(self, name: str, obj):
        """Register ``obj`` under ``name``; returns ``obj``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def register(self, name: str | None = None):
        """Decorator registering the decorated object under ``name`` (default: its ``__name__``)."""
        def deco(obj):
            return self.add(name or obj.__name__, obj)
        return deco

    def get(self, name: str):
        """The object registered as ``name``; :class:`UnknownNameError` if there is none."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.what} {name!r}; allowed: {self.allowed()}") from None

    def names(self) -> list[str]:
        """Registered names (sorted, or in registration order for an ordered registry)."""
        return list(self._items) if self._ordered else sorted(self._items)

    def allowed(self) -> str:
        """The "allowed" part of an error message: the names, comma-separated."""
        return self._allowed() if self._allowed is not None else ", ".join(self.names())

    def items(self):
        return [(k, self._items[k]) for k in self.names()]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self)} names)"
