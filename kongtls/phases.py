"""Kong's request phases, their bits, and the phase check every PDK function makes."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Phase(enum.IntFlag):
    """The phases of Kong's kong/pdk/private/phases.lua, with Kong's bit values."""

    init_worker = 0x1
    certificate = 0x2
    client_hello = 0x8
    rewrite = 0x10
    access = 0x20
    balancer = 0x40
    response = 0x80
    header_filter = 0x200
    body_filter = 0x400
    log = 0x2000
    preread = 0x4000
    error = 0x01000000
    admin_api = 0x10000000


#: The handshake phases, run once per TLS connection.
HANDSHAKE_PHASES: tuple[Phase, ...] = (Phase.client_hello, Phase.certificate)

#: The phases of one HTTP request, in the order the PhaseTracker runs them.
REQUEST_PHASES: tuple[Phase, ...] = (
    Phase.rewrite,
    Phase.access,
    Phase.balancer,
    Phase.response,
    Phase.header_filter,
    Phase.body_filter,
    Phase.log,
)


class PhaseError(RuntimeError):
    """A PDK function was called in a phase Kong does not allow it in."""


class PhaseSet:
    """The phases one PDK function accepts, with Kong's error text for the others."""

    __slots__ = ("mask", "names")

    def __init__(self, phases: Iterable[Phase]) -> None:
        mask = Phase(0)
        for phase in phases:
            mask |= phase
        self.mask = mask
        self.names = ", ".join(
            p.name for p in sorted(Phase, key=lambda p: p.value) if p & mask and p.name
        )

    def __contains__(self, phase: object) -> bool:
        return isinstance(phase, Phase) and bool(phase & self.mask)

    def check(self, current: Phase | None) -> None:
        """Raise L{PhaseError} unless C{current} is one of these phases."""
        if current is not None and current & self.mask:
            return
        if current is None:
            raise PhaseError(f"no phase in kong.ctx.core.phase, (need one of {self.names})")
        name = current.name if current in Phase.__members__.values() else "'unknown phase'"
        raise PhaseError(f"function cannot be called in {name} phase (only in: {self.names})")


def phases(*names: Phase) -> PhaseSet:
    """Shorthand for a L{PhaseSet}."""
    return PhaseSet(names)


P = Phase
#: Kong's `PHASES.request` alias (3.x, with balancer as in the newest phases.lua).
REQUEST = phases(P.rewrite, P.access, P.balancer, P.response, P.header_filter,
                 P.body_filter, P.log, P.error, P.admin_api)
#: kong.response's alias for exit and the header setters.
REWRITE_ACCESS_HEADER = phases(P.rewrite, P.access, P.response, P.header_filter,
                               P.error, P.admin_api)
#: kong.response's alias for the getters.
HEADER_BODY_LOG = phases(P.response, P.header_filter, P.body_filter, P.log,
                         P.error, P.admin_api)
ACCESS_AND_REWRITE = phases(P.rewrite, P.access)
ACCESS_REWRITE_BALANCER = phases(P.rewrite, P.access, P.balancer)
REWRITE_ACCESS_BALANCER_PREREAD = phases(P.rewrite, P.access, P.balancer, P.preread)
LOG_ONLY = phases(P.log)
#: Everything but init_worker, as kong.client.get_ip checks.
NOT_INIT_WORKER = PhaseSet(p for p in Phase if p is not P.init_worker)
