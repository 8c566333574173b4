"""The embedding API: a gateway built from a declarative file or dict, listening on
endpoints inside a reactor the program already runs, reloadable and stoppable.

    gateway = Gateway.fromFile(reactor, "kong.yml", plugins={"my-auth": MyAuth})
    port = await gateway.listen("tcp:8443:interface=127.0.0.1")
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger

from kongtls.access_log import AccessLog
from kongtls.certificates import KeyedChain, SessionPolicy, selfSigned
from kongtls.config import ConfigError, GatewayConfig, loadConfig, parseConfig
from kongtls.http1 import GatewayHTTPFactory
from kongtls.plugins import PluginRegistry
from kongtls.proxy import GatewayResource, RequestServer, Upstreams
from kongtls.runtime import DEFAULT_ALPN, Runtime
from kongtls.tls_server import GatewayTLSFactory
from kongtls.web import QuietSite

log = Logger(namespace="kongtls.gateway")


@dataclass
class GatewaySettings:
    """What the command line sets beside the declarative file."""

    defaultCertificate: KeyedChain | None = None
    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    alpn: tuple[bytes, ...] = DEFAULT_ALPN
    entryPoints: bool = True
    accessLog: AccessLog | None = None


class Gateway:
    """A running configuration plus the factories that serve it."""

    def __init__(self, reactor: Any, config: GatewayConfig, registry: PluginRegistry,
                 settings: GatewaySettings | None = None) -> None:
        self.reactor = reactor
        self.settings = settings or GatewaySettings()
        self.registry = registry
        self._defaultChain = self.settings.defaultCertificate or selfSigned()
        self._runtime = self._build(config)
        self._ports: list[IListeningPort] = []
        self.upstreams = Upstreams(reactor)
        serve = RequestServer(self.currentRuntime, self.upstreams)
        #: twisted.web serves the connections that negotiate HTTP/2.
        self.site = QuietSite(GatewayResource(serve))
        self.site.displayTracebacks = False
        self.http1 = GatewayHTTPFactory(serve, self.site, reactor)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def fromFile(cls, reactor: Any, path: str | Path,
                 plugins: Mapping[str, Any] | None = None,
                 settings: GatewaySettings | None = None) -> Gateway:
        settings = settings or GatewaySettings()
        registry = PluginRegistry(plugins, entryPoints=settings.entryPoints)
        return cls(reactor, loadConfig(path, registry), registry, settings)

    @classmethod
    def fromDict(cls, reactor: Any, document: Mapping[str, Any],
                 plugins: Mapping[str, Any] | None = None,
                 settings: GatewaySettings | None = None,
                 source: str = "<dict>") -> Gateway:
        settings = settings or GatewaySettings()
        registry = PluginRegistry(plugins, entryPoints=settings.entryPoints)
        return cls(reactor, parseConfig(document, source, registry), registry,
                   settings)

    def _build(self, config: GatewayConfig) -> Runtime:
        return Runtime.build(config, self.registry, self._defaultChain,
                             self.settings.sessions, self.settings.alpn,
                             self.settings.accessLog)

    def currentRuntime(self) -> Runtime:
        return self._runtime

    @property
    def config(self) -> GatewayConfig:
        return self._runtime.config

    # -- serving ----------------------------------------------------------------------

    def httpsFactory(self) -> GatewayTLSFactory:
        return GatewayTLSFactory(self.currentRuntime, self.http1, self.reactor)

    def httpFactory(self) -> GatewayHTTPFactory:
        return self.http1

    def listen(self, endpoint: IStreamServerEndpoint | str, tls: bool = True
               ) -> Deferred[IListeningPort]:
        """Serve HTTPS (or plain HTTP with C{tls=False}) on an endpoint or endpoint string."""
        if isinstance(endpoint, str):
            endpoint = serverFromString(self.reactor, endpoint)
        assert IStreamServerEndpoint.providedBy(endpoint)
        factory = self.httpsFactory() if tls else self.httpFactory()
        listening: Deferred[IListeningPort] = endpoint.listen(factory)

        def keep(port: IListeningPort) -> IListeningPort:
            self._ports.append(port)
            return port

        return listening.addCallback(keep)

    @property
    def ports(self) -> Sequence[IListeningPort]:
        return tuple(self._ports)

    # -- changing ---------------------------------------------------------------------

    def reload(self, source: str | Path | Mapping[str, Any]) -> GatewayConfig:
        """Replace the config; on any error the running one stays and the error is raised.

        Handshakes and requests already under way finish with the config they began with.
        """
        if isinstance(source, Mapping):
            config = parseConfig(source, "<dict>", self.registry)
        else:
            config = loadConfig(source, self.registry)
        self._runtime = self._build(config)
        log.info("configuration reloaded from {source}", source=config.source)
        return config

    def stop(self) -> Deferred[None]:
        """Stop listening, close client connections once their responses are written,
        and close idle upstream connections."""
        ports, self._ports = self._ports, []
        waits = [Deferred.fromCoroutine(_stopPort(p)) for p in ports]
        self.http1.closeAll()
        waits.append(self.upstreams.pool.closeCachedConnections())
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)


async def _stopPort(port: IListeningPort) -> None:
    result = port.stopListening()
    if isinstance(result, Deferred):
        await result


def _freezeHeap() -> None:
    gc.collect()
    gc.freeze()
    log.info("{count} startup objects frozen out of garbage collection",
             count=gc.get_freeze_count())


class GatewayService(Service):
    """A gateway as a twistd/IService child: listens on start, stops cleanly."""

    name: str | None = "kongtls"  # type: ignore[assignment]

    def __init__(self, gateway: Gateway, https: Sequence[str], http: Sequence[str],
                 stopReactorOnFailure: bool = False, freezeHeap: bool = False) -> None:
        """C{stopReactorOnFailure}: for ``twistd``, where a gateway that cannot listen
        has nothing left to do; an embedding program decides for itself.

        C{freezeHeap}: once listening, move every object made so far out of the cyclic
        garbage collector's sight (C{gc.freeze}). The modules, configuration and
        contexts of a started gateway are long-lived; without this each full
        collection walked all of them, a 30-40 ms pause every couple of seconds under
        load (the p99 latency). ``twistd kongtls`` sets it; it changes the whole
        process, so an embedding program decides for itself."""
        self.gateway = gateway
        self.stopReactorOnFailure = stopReactorOnFailure
        self.freezeHeap = freezeHeap
        self.https = list(https)
        self.http = list(http)
        self.listening: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        waits = [self.gateway.listen(e, tls=True) for e in self.https]
        waits += [self.gateway.listen(e, tls=False) for e in self.http]
        self.listening = DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)
        self.listening.addCallback(self._announce)
        self.listening.addErrback(self._cannotListen)

    def _announce(self, results: Any) -> None:
        for port in self.gateway.ports:
            log.info("kongtls listening on {address}", address=port.getHost())
        if self.freezeHeap:
            self.gateway.reactor.callWhenRunning(_freezeHeap)

    def _cannotListen(self, failure: Any) -> None:
        log.failure("kongtls cannot listen", failure.value.subFailure
                    if hasattr(failure.value, "subFailure") else failure)
        if self.stopReactorOnFailure:
            # twistd starts services before the reactor runs: stop once it does.
            reactor = self.gateway.reactor
            reactor.callWhenRunning(reactor.stop)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.gateway.stop()

    def reload(self, source: str | Path) -> None:
        """Reload from C{source}, logging (and keeping the running config) on error."""
        try:
            self.gateway.reload(source)
        except ConfigError as e:
            log.error("reload refused, running configuration kept: {error}", error=str(e))


__all__ = ["Gateway", "GatewayService", "GatewaySettings", "ConfigError"]
