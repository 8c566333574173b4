"""Choosing a target of an ``upstreams`` entity: smooth weighted round-robin with
passive health (a target that keeps failing is skipped for a while)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from kongtls.config import Target, Upstream

#: How long a target that failed too often in a row is left out.
UNHEALTHY_SECONDS = 10.0


class _TargetState:
    __slots__ = ("target", "current", "connectFailures", "timeouts", "downUntil")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.current = 0
        self.connectFailures = 0
        self.timeouts = 0
        self.downUntil = 0.0


class Balancer:
    """One upstream's targets and their health, for one runtime."""

    def __init__(self, upstream: Upstream, clock: Callable[[], float]) -> None:
        self.upstream = upstream
        self._clock = clock
        self._states = [_TargetState(t) for t in upstream.targets if t.weight > 0]

    def pick(self, exclude: Collection[Target] = ()) -> Target | None:
        """The next target by weight, healthy ones first, avoiding C{exclude}."""
        now = self._clock()
        candidates = [s for s in self._states if s.target not in exclude]
        healthy = [s for s in candidates if s.downUntil <= now]
        pool = healthy or candidates
        if not pool:
            return None
        total = 0
        best: _TargetState | None = None
        for state in pool:
            state.current += state.target.weight
            total += state.target.weight
            if best is None or state.current > best.current:
                best = state
        assert best is not None
        best.current -= total
        return best.target

    def _state(self, target: Target) -> _TargetState | None:
        for state in self._states:
            if state.target is target:
                return state
        return None

    def succeeded(self, target: Target) -> None:
        state = self._state(target)
        if state is not None:
            state.connectFailures = state.timeouts = 0
            state.downUntil = 0.0

    def failed(self, target: Target, timeout: bool) -> None:
        state = self._state(target)
        if state is None:
            return
        if timeout:
            state.timeouts += 1
            limit, count = self.upstream.timeouts, state.timeouts
        else:
            state.connectFailures += 1
            limit, count = self.upstream.tcpFailures, state.connectFailures
        if limit and count >= limit:
            state.downUntil = self._clock() + UNHEALTHY_SECONDS
            state.connectFailures = state.timeouts = 0
