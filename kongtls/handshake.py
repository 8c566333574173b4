"""Running the synchronous handshake phases (client_hello, certificate) for a connection."""

from __future__ import annotations

import inspect

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from kongtls.connection import ConnectionTLS
from kongtls.pdk import Kong
from kongtls.phases import Phase


class HandshakeHandlerError(RuntimeError):
    """A handshake-phase handler did not finish synchronously."""


def _settle(result: object, plugin: str, phase: Phase) -> None:
    """Handshake handlers are synchronous: anything still waiting aborts the handshake."""
    if isinstance(result, Deferred):
        outcome: list[object] = []
        result.addBoth(outcome.append)
        if not outcome:
            result.cancel()
            raise HandshakeHandlerError(
                f"plugin {plugin!r} returned an unfired Deferred from {phase.name}; "
                f"handshake phases are synchronous")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
    elif inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise HandshakeHandlerError(
            f"plugin {plugin!r} returned an awaitable from {phase.name}; "
            f"handshake phases are synchronous")


def runHandshakePhase(state: ConnectionTLS, phase: Phase) -> None:
    """Run C{phase}'s handlers of the plugins that apply to this connection's SNI."""
    kong: Kong | None = None
    for bound, method in state.runtime.plan.forHandshake(state.sni).handlers(phase):
        if kong is None:
            kong = Kong(state, None, phase)
        kong.currentPlugin = bound.name
        _settle(method(kong, bound.conf), bound.name, phase)
