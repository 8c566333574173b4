"""Outcomes of one upstream try, shared by the PhaseTracker and the proxy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.web.http_headers import Headers

from kongtls.exchange import ShortCircuit


@dataclass
class AttemptFailure:
    """One try at the upstream that failed before a response arrived."""

    response: ShortCircuit
    retryable: bool
    timeout: bool


@dataclass
class OpenTunnel:
    """An upstream that answered an Upgrade request: its head, and the live tunnel."""

    status: int
    headers: Headers
    tunnel: Any
