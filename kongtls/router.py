"""Matching a request to a route by ``hosts``, ``paths`` (prefix) and ``snis``."""

from __future__ import annotations

from collections.abc import Sequence

from kongtls.config import Route
from kongtls.sni import nameMatches


class Router:
    """Picks the most specific matching route, as Kong's router ranks them.

    A route matches when every field it sets matches. Routes setting more of hosts,
    paths, snis and methods come first; then a longer matched path prefix; then config order.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = tuple(routes)

    def match(self, host: str, path: str, sni: str | None, method: str = "GET"
              ) -> tuple[Route, str] | None:
        """The route for a request, with the path prefix it matched ("" if none)."""
        best: tuple[tuple[int, int, int], Route, str] | None = None
        for route in self._routes:
            if route.methods and method not in route.methods:
                continue
            if route.hosts and not any(nameMatches(h, host) for h in route.hosts):
                continue
            if route.snis and not (sni and any(nameMatches(s, sni) for s in route.snis)):
                continue
            prefix = ""
            if route.paths:
                matched = [p for p in route.paths if path.startswith(p)]
                if not matched:
                    continue
                prefix = matched[0] if len(matched) == 1 else max(matched, key=len)
            rank = (bool(route.hosts) + bool(route.paths) + bool(route.snis)
                    + bool(route.methods),
                    len(prefix), -route.index)
            if best is None or rank > best[0]:
                best = (rank, route, prefix)
        return None if best is None else (best[1], best[2])

