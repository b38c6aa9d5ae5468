"""Name -> component registries, so that every pluggable part is chosen by a string."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from synthgen.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of names to factories of one kind of component.

    >>> segmenters = Registry[Callable[..., object]]("segmenter")
    >>> @segmenters.register("none", help="the whole frame is the object")
    ... def make_none(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            self._help[name] = help
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def help(self, name: str) -> str:
        return self._help[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
