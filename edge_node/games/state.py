"""Game-room state with change tracking: typed records, maps and lists.

A handler's state is a :class:`Schema` subclass whose annotated fields are primitives
(``int``, ``float``, ``str``, ``bool``, ``bytes``, optional ones), other
:class:`Schema` records, :class:`StateMap` (string keys) or :class:`StateList`
(primitives)::

    class Player(Schema):
        x: float = 0.0
        y: float = 0.0
        score: int = 0

    class Arena(Schema):
        players: StateMap[Player]
        round: int = 1

Every assignment is recorded in the tree's :class:`ChangeLog` as one operation of the
wire format of :mod:`client_sdk.protocol.state_sync` (``path``, new value or DELETE).
Setting the same path twice in one patch keeps only the last value, moved to the end,
so operations still apply in the order that makes the result right.  A list records
its whole value on every change (lists hold primitives and stay small; use a map for
anything large).

Assigning a wrong type raises ``TypeError`` at once, in the handler that did it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Any, ClassVar, Generic, TypeVar

from client_sdk.protocol.compact import to_float32
from client_sdk.protocol.state_sync import DELETE, Path

__all__ = ["Schema", "StateMap", "StateList", "ChangeLog", "F32", "to_plain", "PRIMITIVES"]

PRIMITIVES = (bool, int, float, str, bytes, type(None))
_PLAIN = frozenset(PRIMITIVES)
_MISSING: Any = object()


class _Float32:
    """The marker of :data:`F32`."""


#: Annotate a field ``x: F32 = 0.0`` to keep it at float32 precision: a value assigned
#: is rounded to the nearest float32 (and stored as a plain float), so it travels in 5
#: bytes instead of 9 and every mirror holds exactly the same value.  For positions,
#: angles, speeds: about 7 significant digits.  (To type checkers it is a ``float``.)
F32 = typing.Annotated[float, _Float32]
V = TypeVar("V")


class ChangeLog:
    """The operations made on one state tree since :meth:`take` was last called."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: dict[Path, Any] = {}

    def record(self, path: Path, value: Any) -> None:
        ops = self.ops
        if path in ops:
            del ops[path]  # re-added at the end: after any parent replaced meanwhile
        ops[path] = value

    def take(self) -> list[tuple[Path, Any]]:
        """The operations so far, in order; the log starts empty again."""
        out = list(self.ops.items())
        self.ops = {}
        return out

    def __bool__(self) -> bool:
        return bool(self.ops)


class _Node:
    """Something in a state tree: knows its log and its path once attached."""

    __slots__ = ("_log", "_path")
    _log: ChangeLog | None
    _path: Path

    def __init__(self) -> None:
        object.__setattr__(self, "_log", None)
        object.__setattr__(self, "_path", ())

    def __getstate__(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Pickled without the change log (a restored tree is tracked anew)."""
        slots = {name: getattr(self, name) for cls in type(self).__mro__
                 for name in cls.__dict__.get("__slots__", ())
                 if name != "_log" and hasattr(self, name)}
        return getattr(self, "__dict__", None), slots

    def __setstate__(self, state: tuple[dict[str, Any] | None, dict[str, Any]]) -> None:
        fields, slots = state
        if fields:
            self.__dict__.update(fields)  # not through __setattr__: nothing to record
        object.__setattr__(self, "_log", None)
        for name, value in slots.items():
            object.__setattr__(self, name, value)

    def _attach(self, log: ChangeLog | None, path: Path) -> None:
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_path", path)
        for key, child in self._children():
            child._attach(log, (*path, key))

    def _children(self) -> Iterator[tuple[str | int, _Node]]:
        return iter(())

    def _changed(self, key: str | int, value: Any) -> None:
        if self._log is not None:
            plain = value if value is DELETE or type(value) in _PLAIN else to_plain(value)
            self._log.record((*self._path, key), plain)


def to_plain(value: Any) -> Any:
    """The wire form of a state value: records and maps become dicts, lists lists."""
    if isinstance(value, Schema):
        return {name: to_plain(v) for name, v in value.__dict__.items()}
    if isinstance(value, StateMap):
        return {k: to_plain(v) for k, v in value._items.items()}
    if isinstance(value, StateList):
        return list(value._items)
    return value


def _check_primitive(value: Any, where: str) -> None:
    if not isinstance(value, PRIMITIVES):
        raise TypeError(f"{where}: {type(value).__name__} is not a state value "
                        "(use int, float, str, bool, bytes, None, Schema, StateMap, StateList)")


class StateMap(_Node, MutableMapping[str, V], Generic[V]):
    """A map from string keys to one kind of value (a primitive type or a Schema)."""

    __slots__ = ("_items", "_kind")

    def __init__(self, kind: type[Any] | None = None,
                 items: dict[str, V] | None = None) -> None:
        super().__init__()
        self._items: dict[str, V] = {}
        self._kind = kind
        for k, v in (items or {}).items():
            self[k] = v

    def _children(self) -> Iterator[tuple[str | int, _Node]]:
        return ((k, v) for k, v in self._items.items() if isinstance(v, _Node))

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __setitem__(self, key: str, value: V) -> None:
        if type(key) is not str:
            raise TypeError(f"state map keys are strings, not {type(key).__name__}")
        kind = self._kind
        if kind is not None and not isinstance(value, kind) and not (
                kind is float and type(value) is int):
            raise TypeError(f"map of {kind.__name__}: cannot hold {type(value).__name__}")
        if isinstance(value, _Node):
            if value._log is not None and value._log is not self._log:
                raise TypeError("this record already belongs to another state tree")
            value._attach(self._log, (*self._path, key))
        else:
            _check_primitive(value, "map value")
        self._items[key] = value
        self._changed(key, value)

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        self._changed(key, DELETE)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    # Read views straight from the dict (the mixins' generic ones are slow in a tick).
    def keys(self) -> KeysView[str]:
        return self._items.keys()

    def values(self) -> ValuesView[V]:
        return self._items.values()

    def items(self) -> ItemsView[str, V]:
        return self._items.items()

    def __repr__(self) -> str:
        return f"StateMap({self._items!r})"


class StateList(_Node):
    """A list of primitives; any change records the whole list."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Any] | None = None) -> None:
        super().__init__()
        self._items: list[Any] = []
        for v in items or ():
            _check_primitive(v, "list item")
            self._items.append(v)

    def _touch(self) -> None:
        if self._log is not None and self._path:
            self._log.record(self._path, list(self._items))

    def append(self, value: Any) -> None:
        _check_primitive(value, "list item")
        self._items.append(value)
        self._touch()

    def pop(self, index: int = -1) -> Any:
        v = self._items.pop(index)
        self._touch()
        return v

    def clear(self) -> None:
        self._items.clear()
        self._touch()

    def __setitem__(self, index: int, value: Any) -> None:
        _check_primitive(value, "list item")
        self._items[index] = value
        self._touch()

    def __getitem__(self, index: int) -> Any:
        return self._items[index]

    def __delitem__(self, index: int) -> None:
        del self._items[index]
        self._touch()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"StateList({self._items!r})"


def _field_spec(hint: Any) -> tuple[str, Any]:
    """How a field is typed: ("prim" | "float" | "f32", types) | ("record", cls)
    | ("map", kind) | ("list", None)."""
    origin = typing.get_origin(hint)
    if origin is StateMap or hint is StateMap:
        args = typing.get_args(hint)
        return "map", (args[0] if args else None)
    if origin is StateList or hint is StateList:
        return "list", None
    if isinstance(hint, type) and issubclass(hint, Schema):
        return "record", hint
    if hint is typing.Any:
        return "prim", PRIMITIVES
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        if _Float32 in extras:
            return "f32", (float, int)
        hint = base
        origin = typing.get_origin(hint)
    args = typing.get_args(hint) if origin is not None else (hint,)
    types = tuple(type(None) if a is None else a for a in args)
    if not all(isinstance(t, type) and issubclass(t, PRIMITIVES) for t in types):
        raise TypeError(f"unsupported state field type {hint!r}")
    if float in types and int not in types:
        return "float", (*types, int)  # an int assigned is stored as a float
    return "prim", types


class Schema(_Node):
    """A record of typed fields (see the module docstring).  Construct with keyword
    arguments for any field; unset fields take their class default (containers and
    nested records a fresh empty one)."""

    # Field values live in the instance's __dict__ (subclasses have one): reading a
    # field is a plain attribute read, the hot path of every tick; writing goes
    # through __setattr__, which checks the type and records the change.
    __slots__ = ()
    _fields: ClassVar[dict[str, tuple[str, Any]]]
    _defaults: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._fields = {}  # resolved on first use (forward references)
        # Defaults move off the class: the class attribute is not needed, and leaving it
        # would make a field that was never set look set.
        defaults: dict[str, Any] = {}
        for base in reversed(cls.__mro__[1:]):
            defaults.update(getattr(base, "_defaults", {}))
        for name in inspect.get_annotations(cls):
            if name in cls.__dict__ and not name.startswith("_"):
                defaults[name] = cls.__dict__[name]
                delattr(cls, name)
        cls._defaults = defaults

    @classmethod
    def _resolve(cls) -> dict[str, tuple[str, Any]]:
        if not cls._fields:
            hints = typing.get_type_hints(cls, include_extras=True)
            for name, hint in hints.items():
                if name.startswith("_") or typing.get_origin(hint) is ClassVar:
                    continue
                cls._fields[name] = _field_spec(hint)
        return cls._fields

    def __init__(self, **values: Any) -> None:
        super().__init__()
        fields = self._resolve()
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        for name, (kind, arg) in fields.items():
            if name in values:
                v = values[name]
            elif name in self._defaults:
                v = self._defaults[name]
            elif kind == "map":
                v = StateMap(arg)
            elif kind == "list":
                v = StateList()
            elif kind == "record":
                v = arg()
            elif type(None) in arg:
                v = None
            else:
                raise TypeError(f"{type(self).__name__}.{name} needs a value (no default)")
            setattr(self, name, v)

    def _children(self) -> Iterator[tuple[str | int, _Node]]:
        return ((k, v) for k, v in self.__dict__.items() if isinstance(v, _Node))

    def __setattr__(self, name: str, value: Any) -> None:
        spec = (self._fields or self._resolve()).get(name)
        if spec is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        kind, arg = spec
        t = type(value)
        # The hot path of a tick: a number into a number field, unchanged or not.
        if (kind == "f32" or kind == "float") and (t is float or t is int):
            value = to_float32(value) if kind == "f32" else float(value)
            d = self.__dict__
            if d.get(name, _MISSING) == value:
                return  # unchanged: nothing to record, nothing to send
            d[name] = value
            log = self._log
            if log is not None:
                log.record((*self._path, name), value)
            return
        where = f"{type(self).__name__}.{name}"
        if kind == "prim" or kind == "float":
            if not isinstance(value, arg) or (type(value) is bool and bool not in arg):
                raise TypeError(f"{where}: expected {' | '.join(t.__name__ for t in arg)}, "
                                f"got {type(value).__name__}")
            if kind == "float" and type(value) is int:
                value = float(value)
        elif kind == "f32":
            if not isinstance(value, (float, int)) or type(value) is bool:
                raise TypeError(f"{where}: expected float, got {type(value).__name__}")
            value = to_float32(float(value))
        elif kind == "map":
            if isinstance(value, dict):
                value = StateMap(arg, value)
            if not isinstance(value, StateMap):
                raise TypeError(f"{where}: expected a StateMap")
        elif kind == "list":
            if isinstance(value, list):
                value = StateList(value)
            if not isinstance(value, StateList):
                raise TypeError(f"{where}: expected a StateList")
        elif not isinstance(value, arg):
            raise TypeError(f"{where}: expected {arg.__name__}")
        if isinstance(value, _Node):
            value._attach(self._log, (*self._path, name))
        self.__dict__[name] = value
        self._changed(name, value)

    def track(self) -> ChangeLog:
        """Make this record the root of a tracked tree; returns its (empty) log."""
        log = ChangeLog()
        self._attach(log, ())
        return log

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and to_plain(self) == to_plain(other)

    __hash__ = None  # type: ignore[assignment]
