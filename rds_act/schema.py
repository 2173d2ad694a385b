"""The schema of every built part is the signature of the class it names.

A config node with a ``_target_`` is checked against that callable before anything is built: each
key must be one of its parameters (or reach one through ``**kwargs`` to a base class), and each
value must match the parameter's type hint (a string for a bool, a word for an int). The type
hints in the code are the one source of the types, for our classes, Lightning's Trainer,
callbacks and loggers, and a user's own classes alike; ranges and cross-field rules stay in
``rds_act.validate``.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from rds_act.errors import ConfigError, locate

# the parts of a run's config that are built from ``_target_`` nodes
ROOTS = ("task", "model", "act", "optimizer", "scheduler", "training", "trainer", "callbacks",
         "logger")
_ANY = object()


class Schema(typing.NamedTuple):
    params: dict[str, object]  # name -> type hint (_ANY where none or unreadable)
    open: bool  # takes keys it does not name (**kwargs that reach no known signature)


def schema_of(target: Callable) -> Schema:
    """The parameters ``target`` accepts, following ``**kwargs`` up a class's bases."""
    params: dict[str, object] = {}
    chain = [c for c in target.__mro__ if c is not object] if inspect.isclass(target) else [target]
    for item in chain:
        func = item.__init__ if inspect.isclass(item) else item
        if inspect.isclass(item) and "__init__" not in vars(item):
            continue
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return Schema(params, True)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # hints that cannot be evaluated here: names are still checked
            hints = {}
        var_kw = False
        for name, p in sig.parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
                continue
            params.setdefault(name, hints.get(name, _ANY))
        if not var_kw:
            return Schema(params, False)
    return Schema(params, True)


def is_number(v: object, finite: bool = False) -> bool:
    """An int or float, not a bool (YAML's true is an int to Python); ``finite``: not nan/inf."""
    return isinstance(v, int | float) and not isinstance(v, bool) and (not finite or math.isfinite(v))


def conforms(value: object, hint: object) -> bool:
    """Whether a plain config value (bool, int, float, str, None, list, dict) fits ``hint``;
    hints a config cannot express (a tensor, a module, a callable) accept anything."""
    if hint is _ANY or hint is typing.Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    base = origin or hint
    if base in (list, tuple, Sequence) or (inspect.isclass(base) and base is not str
                                           and issubclass(base, (list, tuple))):
        return isinstance(value, list | tuple)
    if base in (dict, Mapping):
        return isinstance(value, dict)
    return True


def describe(hint: object) -> str:
    """``hint`` in the words of the error line: "true or false", "an integer or null"."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = [describe(h) for h in typing.get_args(hint)]
        return " or ".join(dict.fromkeys(p for p in parts if p))
    if origin is typing.Literal:
        return ", ".join(repr(a) if isinstance(a, str) else str(a) for a in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return "null"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    base = origin or hint
    if base in (list, tuple, Sequence):
        return "a list"
    if base in (dict, Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _plain(node: object) -> object:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_node(node: DictConfig, key: str) -> None:
    """One ``_target_`` node and the target nodes inside it."""
    target = locate(str(node["_target_"]), f"{key}._target_")
    schema = schema_of(target) if callable(target) else Schema({}, True)
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"
    for k in node.keys():
        k = str(k)
        if k.startswith("_"):
            continue
        if not schema.open and k not in schema.params:
            allowed = ", ".join(sorted(schema.params)) or "none"
            raise ConfigError(f"{key}.{k} is not a setting of {name}; allowed: {allowed}")
        child = _value(node, k)
        if child is _ANY or _walk(child, f"{key}.{k}"):
            continue  # missing or unresolvable (other checks say so), or a built part of its own
        value = _plain(child)
        hint = schema.params.get(k, _ANY)
        if not conforms(value, hint):
            raise ConfigError(f"{key}.{k}={value!r} is not allowed; allowed: {describe(hint)}")


def _value(node: DictConfig | ListConfig, k: str | int) -> object:
    """``node[k]`` resolved; _ANY where it is missing or does not resolve."""
    try:
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, k):
            return _ANY
        return node[k]
    except Exception:
        return _ANY


def _walk(node: object, key: str) -> bool:
    """Check the target nodes in ``node``; whether it is or holds any."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            check_node(node, key)
            return True
        items = [(k, f"{key}.{k}") for k in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(i, f"{key}[{i}]") for i in range(len(node))]
    else:
        return False
    found = False
    for k, name in items:
        found = _walk(_value(node, k), name) or found
    return found


def check_schema(cfg: DictConfig) -> None:
    """Every built part of ``cfg`` against its target's signature: unknown keys and mistyped
    values in one line naming the key, the value and what is allowed."""
    for root in ROOTS:
        if isinstance(cfg, DictConfig) and root in cfg:
            _walk(_value(cfg, root), root)
