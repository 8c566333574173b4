"""A runtime: one loaded configuration, compiled for serving.

Handshakes and requests hold the runtime that was current when they began, so a
reload never changes the rules under a request in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from kongtls.access_log import AccessLog
from kongtls.certificates import CertificateSelector, KeyedChain, SessionPolicy
from kongtls.config import GatewayConfig
from kongtls.plugins import PluginPlan, PluginRegistry
from kongtls.router import Router
from kongtls.tls_server import customizeContext

#: What ALPN may settle on, in the server's order of preference.
DEFAULT_ALPN = (b"h2", b"http/1.1")


@dataclass(frozen=True)
class Runtime:
    config: GatewayConfig
    registry: PluginRegistry
    plan: PluginPlan
    router: Router
    certificates: CertificateSelector
    alpn: tuple[bytes, ...]
    accessLog: AccessLog | None = None

    @classmethod
    def build(cls, config: GatewayConfig, registry: PluginRegistry,
              defaultChain: KeyedChain, sessions: SessionPolicy,
              alpn: tuple[bytes, ...] = DEFAULT_ALPN,
              accessLog: AccessLog | None = None) -> Runtime:
        return cls(
            config=config,
            registry=registry,
            plan=PluginPlan(config, registry),
            router=Router(config.routes),
            certificates=CertificateSelector.build(defaultChain, config.certificates,
                                                   sessions, customizeContext),
            alpn=alpn,
            accessLog=accessLog,
        )
