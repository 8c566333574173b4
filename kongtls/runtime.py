"""A runtime: one loaded configuration, compiled for serving.

Handshakes and requests hold the runtime that was current when they began, so a
reload never changes the rules under a request in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kongtls.access_log import AccessLog
from kongtls.balancer import Balancer
from kongtls.certificates import CertificateSelector, KeyedChain, SessionPolicy
from kongtls.config import GatewayConfig, Service
from kongtls.plugins import PluginPlan, PluginRegistry
from kongtls.router import Router
from kongtls.tls_server import customizeContext
from kongtls.upstream_tls import ServicePolicy

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
    balancers: dict[str, Balancer] = field(default_factory=dict)
    _policies: dict[int, ServicePolicy] = field(default_factory=dict)

    def policyFor(self, service: Service) -> ServicePolicy:
        """How this service's https connections verify and authenticate."""
        policy = self._policies.get(id(service))
        if policy is None:
            cas = [c.cert for c in self.config.caCertificates
                   if c.id in service.caCertificates]
            client = next((c for c in self.config.certificates
                           if service.clientCertificate and c.id == service.clientCertificate),
                          None)
            verify = True if service.tlsVerify is None else service.tlsVerify
            policy = self._policies[id(service)] = ServicePolicy(verify, cas, client)
        return policy

    @classmethod
    def build(cls, config: GatewayConfig, registry: PluginRegistry,
              defaultChain: KeyedChain, sessions: SessionPolicy,
              alpn: tuple[bytes, ...] = DEFAULT_ALPN,
              accessLog: AccessLog | None = None) -> Runtime:
        return cls(
            balancers={u.name: Balancer(u, time.monotonic) for u in config.upstreams},
            config=config,
            registry=registry,
            plan=PluginPlan(config, registry),
            router=Router(config.routes),
            certificates=CertificateSelector.build(defaultChain, config.certificates,
                                                   sessions, customizeContext),
            alpn=alpn,
            accessLog=accessLog,
        )
