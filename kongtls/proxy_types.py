"""Outcomes of one upstream try, shared by the PhaseTracker and the proxy."""

from __future__ import annotations

from dataclasses import dataclass

from kongtls.exchange import ShortCircuit


@dataclass
class AttemptFailure:
    """One try at the upstream that failed before a response arrived."""

    response: ShortCircuit
    retryable: bool
    timeout: bool
