"""kongtls: a TLS gateway on Twisted with Kong's phases and ``kong.client.tls``."""

from __future__ import annotations

__version__ = "0.1.0"

from kongtls.phases import Phase, PhaseError

__all__ = ["Phase", "PhaseError", "__version__"]
