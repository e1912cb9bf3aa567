"""Plugins: observers named on the command line or published as entry points.

``pkg.module:name`` imports ``pkg.module`` and takes its attribute ``name``, which may
be an observer, a list (or tuple) of observers, or a callable (e.g. a factory
function or an Observer subclass) returning one or a list.  A bare ``name`` (no
colon) is looked up in the entry-point group ``percolator.observers``, whose values
are such specs (``citations = "observers.citations:OBSERVERS"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from ._registry import Observer, ObserverRegistry
from .errors import PluginError

ENTRY_POINT_GROUP = "percolator.observers"


def as_observers(obj: object, origin: str) -> list[Observer]:
    """Observers in ``obj`` (an observer, a list of them, or a callable returning either)."""
    if isinstance(obj, Observer):
        return [obj]
    if isinstance(obj, (list, tuple)):
        out: list[Observer] = []
        for item in obj:
            if not isinstance(item, Observer):
                raise PluginError(f"{origin}: {item!r} in the list is not an observer")
            out.append(item)
        return out
    if callable(obj):
        try:
            made = obj()
        except Exception as exc:
            raise PluginError(f"{origin}: calling {obj!r} failed: {exc}") from exc
        if callable(made) and not isinstance(made, Observer):
            raise PluginError(f"{origin}: {obj!r} returned {made!r}, not observers")
        return as_observers(made, origin)
    raise PluginError(f"{origin} is {type(obj).__name__}, not an observer, a list of observers"
                      " or a callable returning them")


def load_spec(spec: str) -> list[Observer]:
    """Observers of ``pkg.module:name``, or of entry point ``name`` if there is no colon."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        return load_entry_points([spec])
    if not module_name or not attr:
        raise PluginError(f"observer spec must be pkg.module:name, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - a plugin's import may raise anything (or not parse)
        raise PluginError(f"cannot import {module_name!r} for {spec!r}: {exc!r}") from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PluginError(f"{spec!r}: {module_name} has no attribute {attr!r}") from exc
    return as_observers(obj, spec)


def available_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_entry_points(names: Iterable[str] | None = None) -> list[Observer]:
    """Observers of the named entry points of ``percolator.observers`` (None = all of them)."""
    found = available_entry_points()
    chosen = sorted(found) if names is None else list(names)
    out: list[Observer] = []
    for name in chosen:
        ep = found.get(name)
        if ep is None:
            raise PluginError(f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r}"
                              f" (installed: {', '.join(sorted(found)) or 'none'})")
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"entry point {name!r} ({ep.value}) failed to load: {exc}"
                              ) from exc
        out.extend(as_observers(obj, f"entry point {name!r} ({ep.value})"))
    return out


def load_registry(specs: Iterable[str]) -> ObserverRegistry:
    """One registry of every spec's observers; two on one column raise ConfigurationError."""
    registry = ObserverRegistry()
    for spec in specs:
        for obs in load_spec(spec):
            registry.add(obs)
    return registry
