"""``twistd kongtls``: options and the service they make."""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from kongtls.access_log import AccessLog
from kongtls.certificates import SessionPolicy, loadKeyedChain
from kongtls.config import ConfigError
from kongtls.plugins import PluginLoadError, parsePluginOption

DEFAULT_HTTPS = "tcp:8443:interface=127.0.0.1"
DEFAULT_HTTP = "tcp:8000:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("A TLS gateway with Kong's plugin phases and kong.client.tls. "
                "With no --config it serves a built-in demo.")

    optParameters = [
        ["config", "c", None, "Declarative config file (Kong's YAML, _format_version 3.0)."],
        ["ssl-cert", None, None, "PEM certificate chain of the default certificate."],
        ["ssl-key", None, None, "PEM private key of the default certificate."],
        ["ssl-session-tickets", None, "on", "Resume sessions with tickets: on or off."],
        ["ssl-session-cache", None, "0",
         "A server-side session-ID cache (0 = off; any other number turns it on)."],
        ["access-log", None, None,
         "Write one JSON line per request (Kong's log serializer) to PATH, or - for stdout."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["https"] = []
        self["http"] = []
        self["plugin"] = []

    def opt_https(self, endpoint: str) -> None:
        """HTTPS listener, a server endpoint string (repeatable) [default: %s]."""
        self["https"].append(endpoint)

    def opt_http(self, endpoint: str) -> None:
        """Plain HTTP listener, a server endpoint string (repeatable)."""
        self["http"].append(endpoint)

    def opt_plugin(self, spec: str) -> None:
        """A plugin: NAME=MODULE:ATTR (repeatable)."""
        self["plugin"].append(spec)

    opt_https.__doc__ = (opt_https.__doc__ or "") % DEFAULT_HTTPS
    opt_http.__doc__ = f"Plain HTTP listener, a server endpoint string (repeatable) " \
                       f"[default: {DEFAULT_HTTP}]."

    def postOptions(self) -> None:
        tickets = self["ssl-session-tickets"]
        if tickets not in ("on", "off"):
            raise usage.UsageError("--ssl-session-tickets must be on or off")
        try:
            cache = int(self["ssl-session-cache"])
        except ValueError:
            raise usage.UsageError("--ssl-session-cache must be a number") from None
        if cache < 0:
            raise usage.UsageError("--ssl-session-cache must not be negative")
        self["sessions"] = SessionPolicy(tickets=tickets == "on", cacheSize=cache)
        if bool(self["ssl-cert"]) != bool(self["ssl-key"]):
            raise usage.UsageError("--ssl-cert and --ssl-key go together")
        if not self["https"] and not self["http"]:
            self["https"] = [DEFAULT_HTTPS]
            self["http"] = [DEFAULT_HTTP]


def _fatal(message: str) -> None:
    sys.stderr.write(f"kongtls: {message}\n")
    raise SystemExit(1)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from kongtls.gateway import Gateway, GatewayService, GatewaySettings

    try:
        plugins = dict(parsePluginOption(spec) for spec in options["plugin"])
        settings = GatewaySettings(sessions=options["sessions"])
        if options["access-log"]:
            try:
                settings.accessLog = AccessLog(options["access-log"])
            except OSError as e:
                _fatal(f"--access-log {options['access-log']}: {e.strerror}")
        if options["ssl-cert"]:
            settings.defaultCertificate = loadKeyedChain(options["ssl-cert"],
                                                         options["ssl-key"])
        if options["config"]:
            gateway = Gateway.fromFile(reactor, options["config"], plugins, settings)
        else:
            gateway = _demoGateway(reactor, plugins, settings)
    except (ConfigError, PluginLoadError) as e:
        _fatal(str(e))
    top = MultiService()
    service = GatewayService(gateway, options["https"], options["http"],
                             stopReactorOnFailure=True, freezeHeap=True)
    service.setServiceParent(top)
    if options["config"]:
        path = options["config"]
        signal.signal(signal.SIGHUP,
                      lambda *_: reactor.callFromThread(service.reload, path))
    return top


def _demoGateway(reactor: Any, plugins: Any, settings: Any) -> Any:
    from kongtls.demo import demoDocument
    from kongtls.echo import echoSite
    from kongtls.gateway import Gateway

    echo = reactor.listenTCP(0, echoSite(), interface="127.0.0.1")
    return Gateway.fromDict(reactor, demoDocument(echo.getHost().port), plugins, settings,
                            source="<built-in demo>")
