"""Finding plugins by name, and choosing which instances run for a connection or request.

A plugin is any object with some of the phase methods of L{IPluginHandler}; names come
from the bundled plugins, ``--plugin NAME=MODULE:ATTR`` and the ``kongtls.plugins``
entry-point group, in that order of increasing precedence.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from zope.interface import Attribute, Interface

from kongtls.config import GatewayConfig, PluginEntry, Route
from kongtls.phases import Phase
from kongtls.schema import applySchema
from kongtls.sni import nameMatches

ENTRY_POINT_GROUP = "kongtls.plugins"


class IPluginHandler(Interface):
    """What a plugin may define; every method is optional (duck typing is enough)."""

    PRIORITY = Attribute("int: higher runs first")
    VERSION = Attribute("str: the plugin's version")

    def client_hello(kong: Any, conf: Mapping[str, Any]) -> None:
        """In OpenSSL's servername callback; synchronous."""

    def certificate(kong: Any, conf: Mapping[str, Any]) -> None:
        """Once the ClientHello is read; synchronous."""

    def rewrite(kong: Any, conf: Mapping[str, Any]) -> Any:
        """Before routing; global plugins only. May return a Deferred or be async."""

    def access(kong: Any, conf: Mapping[str, Any]) -> Any:
        """After routing, before the upstream is called."""

    def header_filter(kong: Any, conf: Mapping[str, Any]) -> Any:
        """With the response status and headers, before they are sent."""

    def body_filter(kong: Any, conf: Mapping[str, Any]) -> Any:
        """With each chunk of the response body."""

    def log(kong: Any, conf: Mapping[str, Any]) -> Any:
        """After the response is sent."""


class PluginLoadError(ValueError):
    """A plugin reference that cannot be imported or used."""


def importReference(reference: str) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return the object."""
    moduleName, sep, attr = reference.partition(":")
    if not sep or not moduleName or not attr:
        raise PluginLoadError(f"{reference!r} is not of the form MODULE:ATTR")
    try:
        obj: Any = importlib.import_module(moduleName)
    except ImportError as e:
        raise PluginLoadError(f"cannot import {moduleName!r}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginLoadError(f"{moduleName!r} has no attribute {attr!r}") from None
    return obj


def parsePluginOption(option: str) -> tuple[str, Any]:
    """Read one ``NAME=MODULE:ATTR`` command-line value."""
    name, sep, reference = option.partition("=")
    if not sep or not name.strip():
        raise PluginLoadError(f"--plugin {option!r}: expected NAME=MODULE:ATTR")
    return name.strip(), importReference(reference.strip())


def _instantiate(name: str, obj: Any) -> Any:
    handler = obj() if isinstance(obj, type) else obj
    if not any(callable(getattr(handler, p.name or "", None)) for p in Phase):
        raise PluginLoadError(f"plugin {name!r} ({obj!r}) defines no phase handler")
    return handler


class PluginRegistry:
    """Plugin handlers by name."""

    def __init__(self, handlers: Mapping[str, Any] | None = None,
                 entryPoints: bool = True) -> None:
        from kongtls.bundled import BUNDLED_PLUGINS

        self._handlers: dict[str, Any] = {}
        for name, obj in BUNDLED_PLUGINS.items():
            self.register(name, obj)
        if entryPoints:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    self.register(ep.name, ep.load())
                except Exception as e:
                    raise PluginLoadError(
                        f"entry point {ep.name!r} ({ep.value}): {e}") from None
        for name, obj in (handlers or {}).items():
            self.register(name, obj)

    def register(self, name: str, obj: Any) -> None:
        self._handlers[name] = _instantiate(name, obj)

    def get(self, name: str) -> Any:
        return self._handlers[name]

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def checkConfig(self, name: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        """C{conf} against the plugin's ``SCHEMA`` (if it has one), defaults filled in."""
        schema = getattr(self._handlers[name], "SCHEMA", None)
        if schema is None:
            return dict(conf)
        return applySchema(schema, conf)

    def unknown(self, name: str) -> str | None:
        """For L{kongtls.config.parseConfig}: None if C{name} is registered."""
        if name in self._handlers:
            return None
        return f"no plugin named {name!r} is registered (known: {', '.join(self.names())})"


@dataclass(frozen=True, eq=False)
class BoundPlugin:
    """A plugin instance of the config with its handler."""

    entry: PluginEntry
    handler: Any
    priority: int

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def conf(self) -> dict[str, Any]:
        return self.entry.config

    def method(self, phase: Phase) -> Any:
        return getattr(self.handler, phase.name or "", None)


Handler = tuple[BoundPlugin, Callable[..., Any]]


class PluginSet:
    """Plugin instances in run order, with each phase's handlers looked up once.

    Built when the config is loaded (or once per SNI), so a request never asks a
    plugin which methods it has.
    """

    __slots__ = ("plugins", "_handlers")

    def __init__(self, plugins: Iterable[BoundPlugin]) -> None:
        self.plugins = tuple(sorted(plugins, key=lambda b: (-b.priority, b.name)))
        self._handlers: dict[Phase, tuple[Handler, ...]] = {}
        for phase in Phase:
            found = tuple((b, m) for b in self.plugins if (m := b.method(phase)) is not None)
            if found:
                self._handlers[phase] = found

    def handlers(self, phase: Phase) -> tuple[Handler, ...]:
        return self._handlers.get(phase, ())

    def defines(self, phase: Phase) -> bool:
        return phase in self._handlers


class PluginPlan:
    """Which plugin instances run for a handshake, for rewrite, and for a matched route.

    The most specific instance of a plugin name wins: route, then service, then global.
    """

    def __init__(self, config: GatewayConfig, registry: PluginRegistry) -> None:
        bound = [
            BoundPlugin(entry, registry.get(entry.name),
                        int(getattr(registry.get(entry.name), "PRIORITY", 0)))
            for entry in config.allPlugins() if entry.enabled
        ]
        self.globals = PluginSet(b for b in bound if b.entry.isGlobal)
        self._byRoute: dict[int, PluginSet] = {}
        self._bySNI: dict[str | None, PluginSet] = {}
        self._routes = config.routes
        for route in config.routes:
            chosen: dict[str, BoundPlugin] = {b.name: b for b in self.globals.plugins}
            for b in bound:
                if b.entry.service is not None and b.entry.service is route.service:
                    chosen[b.name] = b
            for b in bound:
                if b.entry.route is route:
                    chosen[b.name] = b
            self._byRoute[id(route)] = PluginSet(chosen.values())

    def forRoute(self, route: Route | None) -> PluginSet:
        if route is None:
            return self.globals
        return self._byRoute[id(route)]

    def forHandshake(self, sni: str | None) -> PluginSet:
        """Global plugins, plus those of routes whose ``snis`` include C{sni}.

        For each plugin name the first matching route (in config order) supplies the
        instance, with its own-route, then its service's, then the global instance.
        Worked out once per SNI (a bounded cache: SNIs come from clients).
        """
        found = self._bySNI.get(sni)
        if found is not None:
            return found
        chosen: dict[str, BoundPlugin] = {}
        if sni:
            for route in self._routes:
                if any(nameMatches(pattern, sni) for pattern in route.snis):
                    for b in self._byRoute[id(route)].plugins:
                        chosen.setdefault(b.name, b)
        if chosen:
            for b in self.globals.plugins:
                chosen.setdefault(b.name, b)
            found = PluginSet(chosen.values())
        else:  # no route for this SNI: the global set itself, not a copy of it
            found = self.globals
        if len(self._bySNI) >= 4096:
            self._bySNI.clear()
        self._bySNI[sni] = found
        return found
