"""Kong's declarative configuration (``_format_version: "3.0"``), parsed and checked.

Every problem found is a L{ConfigError} naming the file, the entity and the field, so
that a gateway refuses to start (or keeps its running config on reload) with one line
that says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from kongtls.schema import SchemaError


class ConfigError(ValueError):
    """A declarative configuration that cannot be used, with where and why."""

    def __init__(self, source: str, entity: str, fieldName: str | None, problem: str) -> None:
        self.source = source
        self.entity = entity
        self.field = fieldName
        self.problem = problem
        where = f"{entity}: field {fieldName!r}" if fieldName else entity
        super().__init__(f"{source}: {where}: {problem}")


@dataclass(eq=False)
class Target:
    host: str
    port: int
    weight: int = 100


@dataclass(eq=False)
class Upstream:
    """A load-balanced set of targets; a service whose host is its name goes through it."""

    name: str
    targets: list[Target] = field(default_factory=list)
    tcpFailures: int = 3
    timeouts: int = 3


@dataclass(eq=False)
class Service:
    name: str
    url: str
    protocol: str
    host: str
    port: int
    path: str
    plugins: list[PluginEntry] = field(default_factory=list)
    connectTimeout: int = 60000
    readTimeout: int = 60000
    writeTimeout: int = 60000
    retries: int = 5
    tlsVerify: bool | None = None
    caCertificates: tuple[str, ...] = ()
    clientCertificate: str | None = None
    upstream: Upstream | None = None


@dataclass(eq=False)
class Route:
    name: str
    index: int
    service: Service | None
    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    snis: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    stripPath: bool = True
    preserveHost: bool = False
    plugins: list[PluginEntry] = field(default_factory=list)


@dataclass(eq=False)
class PluginEntry:
    """One configured plugin instance: a name, its config, and its scope."""

    name: str
    config: dict[str, Any]
    enabled: bool = True
    route: Route | None = None
    service: Service | None = None
    entity: str = ""

    @property
    def isGlobal(self) -> bool:
        return self.route is None and self.service is None


@dataclass(eq=False)
class CertificateEntry:
    """A server certificate chain (leaf first) with its key and the SNIs it serves."""

    id: str | None
    chain: list[x509.Certificate]
    key: PrivateKeyTypes
    snis: tuple[str, ...]
    entity: str = ""


@dataclass(eq=False)
class CACertificateEntry:
    id: str | None
    cert: x509.Certificate


@dataclass(eq=False)
class GatewayConfig:
    """Everything a declarative file declares, with cross references resolved."""

    source: str = "<defaults>"
    services: list[Service] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    plugins: list[PluginEntry] = field(default_factory=list)
    certificates: list[CertificateEntry] = field(default_factory=list)
    caCertificates: list[CACertificateEntry] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)

    def allPlugins(self) -> list[PluginEntry]:
        """Every plugin instance, wherever it was declared."""
        found = list(self.plugins)
        for service in self.services:
            found.extend(service.plugins)
        for route in self.routes:
            found.extend(route.plugins)
        return found


_TOP_FIELDS = {"_format_version", "_transform", "_workspace", "services", "routes",
               "plugins", "certificates", "ca_certificates", "upstreams", "targets",
               "consumers"}
_UPSTREAM_FIELDS = {"name", "id", "targets", "tags", "algorithm", "healthchecks", "slots",
                    "host_header", "client_certificate", "hash_on", "hash_fallback"}
_TARGET_FIELDS = {"target", "weight", "id", "tags", "upstream"}
_SERVICE_FIELDS = {"name", "id", "url", "protocol", "host", "port", "path", "routes",
                   "plugins", "tags", "retries", "connect_timeout", "read_timeout",
                   "write_timeout", "enabled", "tls_verify", "ca_certificates",
                   "client_certificate"}
_ROUTE_FIELDS = {"name", "id", "paths", "hosts", "snis", "service", "plugins", "tags",
                 "protocols", "methods", "strip_path", "preserve_host", "headers",
                 "regex_priority", "path_handling", "https_redirect_status_code",
                 "request_buffering", "response_buffering"}
_PLUGIN_FIELDS = {"name", "id", "config", "enabled", "route", "service", "consumer",
                  "tags", "protocols", "instance_name", "ordering"}
_CERT_FIELDS = {"id", "cert", "key", "snis", "tags", "cert_alt", "key_alt"}
_CA_FIELDS = {"id", "cert", "tags", "cert_digest"}

class PluginCatalog(Protocol):
    """What the config reader asks of the plugins (a L{kongtls.plugins.PluginRegistry})."""

    def unknown(self, name: str) -> str | None:
        """None if a plugin of this name is registered, else why not."""

    def checkConfig(self, name: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        """The plugin's conf with its schema's defaults; raises SchemaError."""


class _Reader:
    """Walks one declarative document, raising L{ConfigError} at the first problem."""

    def __init__(self, source: str, plugins: PluginCatalog | None) -> None:
        self.source = source
        self.plugins = plugins
        self.config = GatewayConfig(source=source)
        self.services: dict[str, Service] = {}
        self.routes: dict[str, Route] = {}
        self.upstreams: dict[str, Upstream] = {}

    def fail(self, entity: str, fieldName: str | None, problem: str) -> ConfigError:
        return ConfigError(self.source, entity, fieldName, problem)

    def mapping(self, value: object, entity: str, allowed: set[str],
                kind: str | None = None, key: str = "name") -> tuple[Mapping[str, Any], str]:
        """The entity's fields, and its label: by name (``service 'x'``) when it has one."""
        if not isinstance(value, Mapping):
            raise self.fail(entity, None, f"expected a mapping, got {_typeName(value)}")
        label = value.get(key)
        if kind and isinstance(label, str) and label:
            entity = f"{kind} {label!r}"
        for field_ in value:
            if field_ not in allowed:
                raise self.fail(entity, str(field_), "unknown field")
        return value, entity

    def string(self, data: Mapping[str, Any], key: str, entity: str, required: bool = False
               ) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(entity, key, "required field missing")
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(entity, key, f"expected a non-empty string, got {_typeName(value)}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, entity: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(entity, key, f"expected true or false, got {value!r}")
        return value

    def strings(self, data: Mapping[str, Any], key: str, entity: str) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(entity, key, "expected a list of non-empty strings")
        return tuple(value)

    def entities(self, data: Mapping[str, Any], key: str, entity: str) -> list[Any]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(entity, key, f"expected a list, got {_typeName(value)}")
        return value

    def read(self, document: object) -> GatewayConfig:
        top, _ = self.mapping(document, "top level", _TOP_FIELDS)
        version = top.get("_format_version")
        if version is None:
            raise self.fail("top level", "_format_version", "required field missing")
        if str(version) not in ("1.1", "2.1", "3.0"):
            raise self.fail("top level", "_format_version",
                            f"unsupported version {version!r} (expected \"3.0\")")
        for i, raw in enumerate(self.entities(top, "upstreams", "top level")):
            self.upstream(raw, i)
        for i, raw in enumerate(self.entities(top, "targets", "top level")):
            self.target(raw, f"targets[{i}]", None)
        for i, raw in enumerate(self.entities(top, "services", "top level")):
            self.service(raw, i)
        for i, raw in enumerate(self.entities(top, "routes", "top level")):
            self.route(raw, f"routes[{i}]", None)
        for i, raw in enumerate(self.entities(top, "plugins", "top level")):
            self.config.plugins.append(self.plugin(raw, f"plugins[{i}]", None, None))
        for i, raw in enumerate(self.entities(top, "certificates", "top level")):
            self.certificate(raw, i)
        for i, raw in enumerate(self.entities(top, "ca_certificates", "top level")):
            self.caCertificate(raw, i)
        self.checkScopes()
        self.checkReferences()
        return self.config

    def checkReferences(self) -> None:
        known = {c.id for c in self.config.certificates if c.id}
        caKnown = {c.id for c in self.config.caCertificates if c.id}
        for service in self.config.services:
            entity = f"service {service.name!r}"
            if service.clientCertificate and service.clientCertificate not in known:
                raise self.fail(entity, "client_certificate",
                                f"no certificate with id {service.clientCertificate!r}")
            for caId in service.caCertificates:
                if caId not in caKnown:
                    raise self.fail(entity, "ca_certificates",
                                    f"no ca_certificate with id {caId!r}")

    def integer(self, data: Mapping[str, Any], key: str, entity: str, default: int,
                low: int, high: int) -> int:
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(entity, key, f"expected an integer from {low} to {high}, "
                                         f"got {value!r}")
        return value

    def upstream(self, raw: object, index: int) -> None:
        data, entity = self.mapping(raw, f"upstreams[{index}]", _UPSTREAM_FIELDS, "upstream")
        name = self.string(data, "name", entity, required=True)
        assert name is not None
        if name in self.upstreams:
            raise self.fail(entity, "name", "duplicate upstream name")
        algorithm = data.get("algorithm", "round-robin")
        if algorithm != "round-robin":
            raise self.fail(entity, "algorithm", f"only round-robin is supported, "
                                                 f"got {algorithm!r}")
        upstream = Upstream(name=name.lower())
        checks = data.get("healthchecks") or {}
        unhealthy = checks.get("passive", {}).get("unhealthy", {}) \
            if isinstance(checks, Mapping) else {}
        if not isinstance(unhealthy, Mapping):
            raise self.fail(entity, "healthchecks", "expected passive.unhealthy as a mapping")
        upstream.tcpFailures = self.integer(unhealthy, "tcp_failures", entity, 3, 0, 255)
        upstream.timeouts = self.integer(unhealthy, "timeouts", entity, 3, 0, 255)
        self.upstreams[upstream.name] = upstream
        self.config.upstreams.append(upstream)
        for i, rawTarget in enumerate(self.entities(data, "targets", entity)):
            self.target(rawTarget, f"{entity} targets[{i}]", upstream)

    def target(self, raw: object, entity: str, upstream: Upstream | None) -> None:
        data, _ = self.mapping(raw, entity, _TARGET_FIELDS)
        if upstream is None:
            upstream = self.reference(data, "upstream", self.upstreams, entity)
            if upstream is None:
                raise self.fail(entity, "upstream", "a top-level target needs an upstream")
        spec = self.string(data, "target", entity, required=True)
        assert spec is not None
        host, sep, port = spec.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise self.fail(entity, "target", f"expected host:port, got {spec!r}")
        weight = self.integer(data, "weight", entity, 100, 0, 65535)
        upstream.targets.append(Target(host.strip("[]"), int(port), weight))

    def service(self, raw: object, index: int) -> None:
        data, entity = self.mapping(raw, f"services[{index}]", _SERVICE_FIELDS, "service")
        name = self.string(data, "name", entity, required=True)
        assert name is not None
        if name in self.services:
            raise self.fail(entity, "name", "duplicate service name")
        url = self.string(data, "url", entity)
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise self.fail(entity, "url", f"not an http(s) URL: {url!r}")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise self.fail(entity, "url", f"bad port in {url!r}") from None
            protocol, host, path = parts.scheme, parts.hostname, parts.path or "/"
        else:
            givenHost = self.string(data, "host", entity)
            if givenHost is None:
                raise self.fail(entity, "url", "a service needs a url or a host")
            host = givenHost
            protocol = self.string(data, "protocol", entity) or "http"
            if protocol not in ("http", "https"):
                raise self.fail(entity, "protocol", f"unsupported protocol {protocol!r}")
            port = data.get("port", 443 if protocol == "https" else 80)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise self.fail(entity, "port", f"expected a port number, got {port!r}")
            path = self.string(data, "path", entity) or "/"
            url = f"{protocol}://{host}:{port}{path}"
        service = Service(name=name, url=url, protocol=protocol, host=host, port=port,
                          path=path)
        big = 2**31 - 2
        service.connectTimeout = self.integer(data, "connect_timeout", entity, 60000, 1, big)
        service.readTimeout = self.integer(data, "read_timeout", entity, 60000, 1, big)
        service.writeTimeout = self.integer(data, "write_timeout", entity, 60000, 1, big)
        service.retries = self.integer(data, "retries", entity, 5, 0, 32767)
        if "tls_verify" in data and data["tls_verify"] is not None:
            service.tlsVerify = self.boolean(data, "tls_verify", entity, True)
        service.caCertificates = self.strings(data, "ca_certificates", entity)
        clientCert = data.get("client_certificate")
        if clientCert is not None:
            certId = clientCert.get("id") if isinstance(clientCert, Mapping) else clientCert
            if not isinstance(certId, str):
                raise self.fail(entity, "client_certificate", "expected {id: <certificate id>}")
            service.clientCertificate = certId
        service.upstream = self.upstreams.get(host.lower())
        self.services[name] = service
        self.config.services.append(service)
        for i, rawRoute in enumerate(self.entities(data, "routes", entity)):
            self.route(rawRoute, f"{entity} routes[{i}]", service)
        for i, rawPlugin in enumerate(self.entities(data, "plugins", entity)):
            service.plugins.append(
                self.plugin(rawPlugin, f"{entity} plugins[{i}]", None, service))

    def route(self, raw: object, entity: str, service: Service | None) -> None:
        data, entity = self.mapping(raw, entity, _ROUTE_FIELDS, "route")
        name = self.string(data, "name", entity) or f"route-{len(self.config.routes)}"
        if name in self.routes:
            raise self.fail(entity, "name", "duplicate route name")
        if service is None:
            ref = data.get("service")
            if ref is None:
                raise self.fail(entity, "service", "a top-level route needs a service")
            refName = ref.get("name") if isinstance(ref, Mapping) else ref
            if not isinstance(refName, str) or refName not in self.services:
                raise self.fail(entity, "service", f"no service named {refName!r}")
            service = self.services[refName]
        elif "service" in data:
            raise self.fail(entity, "service", "a nested route takes its parent's service")
        paths = self.strings(data, "paths", entity)
        for p in paths:
            if not p.startswith("/"):
                raise self.fail(entity, "paths", f"a path must start with '/': {p!r}")
        hosts = tuple(h.lower() for h in self.strings(data, "hosts", entity))
        snis = tuple(s.lower() for s in self.strings(data, "snis", entity))
        methods = tuple(m.upper() for m in self.strings(data, "methods", entity))
        if not (paths or hosts or snis or methods):
            raise self.fail(entity, "paths", "a route needs paths, hosts, snis or methods")
        route = Route(name=name, index=len(self.config.routes), service=service,
                      paths=paths, hosts=hosts, snis=snis, methods=methods,
                      stripPath=self.boolean(data, "strip_path", entity, True),
                      preserveHost=self.boolean(data, "preserve_host", entity, False))
        self.routes[name] = route
        self.config.routes.append(route)
        for i, rawPlugin in enumerate(self.entities(data, "plugins", entity)):
            route.plugins.append(self.plugin(rawPlugin, f"{entity} plugins[{i}]", route, None))

    def plugin(self, raw: object, entity: str, route: Route | None,
               service: Service | None) -> PluginEntry:
        data, _ = self.mapping(raw, entity, _PLUGIN_FIELDS)
        name = self.string(data, "name", entity, required=True)
        assert name is not None
        entity = f"{entity} (plugin {name!r})"
        if self.plugins is not None:
            problem = self.plugins.unknown(name)
            if problem:
                raise self.fail(entity, "name", problem)
        conf = data.get("config", {})
        if conf is None:
            conf = {}
        if not isinstance(conf, Mapping):
            raise self.fail(entity, "config", f"expected a mapping, got {_typeName(conf)}")
        if self.plugins is not None:
            try:
                conf = self.plugins.checkConfig(name, conf)
            except SchemaError as e:
                raise self.fail(entity, e.field, e.problem) from None
        enabled = self.boolean(data, "enabled", entity, True)
        if route is None and service is None:
            route = self.reference(data, "route", self.routes, entity)
            service = self.reference(data, "service", self.services, entity)
            if route is not None and service is not None:
                raise self.fail(entity, "service", "give a route or a service, not both")
        return PluginEntry(name=name, config=dict(conf), enabled=enabled, route=route,
                           service=service, entity=entity)

    def reference(self, data: Mapping[str, Any], key: str, known: Mapping[str, Any],
                  entity: str) -> Any:
        ref = data.get(key)
        if ref is None:
            return None
        refName = ref.get("name") if isinstance(ref, Mapping) else ref
        if not isinstance(refName, str) or refName not in known:
            raise self.fail(entity, key, f"no {key} named {refName!r}")
        return known[refName]

    def certificate(self, raw: object, index: int) -> None:
        data, entity = self.mapping(raw, f"certificates[{index}]", _CERT_FIELDS,
                                    "certificate", "id")
        certId = self.string(data, "id", entity)
        certPem = self.string(data, "cert", entity, required=True)
        keyPem = self.string(data, "key", entity, required=True)
        assert certPem is not None and keyPem is not None
        chain = self.pemCertificates(certPem, entity, "cert")
        try:
            key = serialization.load_pem_private_key(keyPem.encode(), password=None)
        except (ValueError, TypeError) as e:
            raise self.fail(entity, "key", f"not a PEM private key ({e})") from None
        if not _keyMatches(key, chain[0]):
            raise self.fail(entity, "key", "the key does not match the certificate")
        snis: list[str] = []
        for sni in self.entities(data, "snis", entity):
            if isinstance(sni, Mapping):
                sni = sni.get("name")
            if not isinstance(sni, str) or not sni:
                raise self.fail(entity, "snis", "expected names or {name: ...} mappings")
            snis.append(sni.lower())
        self.config.certificates.append(
            CertificateEntry(id=certId, chain=chain, key=key, snis=tuple(snis), entity=entity))

    def caCertificate(self, raw: object, index: int) -> None:
        data, entity = self.mapping(raw, f"ca_certificates[{index}]", _CA_FIELDS,
                                    "ca_certificate", "id")
        caId = self.string(data, "id", entity)
        pem = self.string(data, "cert", entity, required=True)
        assert pem is not None
        certs = self.pemCertificates(pem, entity, "cert")
        if len(certs) != 1:
            raise self.fail(entity, "cert", "expected exactly one certificate")
        self.config.caCertificates.append(CACertificateEntry(id=caId, cert=certs[0]))

    def pemCertificates(self, pem: str, entity: str, key: str) -> list[x509.Certificate]:
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except ValueError as e:
            raise self.fail(entity, key, f"not a PEM certificate ({e})") from None
        return certs

    def checkScopes(self) -> None:
        """Kong allows one instance of a plugin name per scope."""
        seen: dict[tuple[str, int, int], str] = {}
        for entry in self.config.allPlugins():
            scope = (entry.name, id(entry.route), id(entry.service))
            if scope in seen:
                raise self.fail(entry.entity, "name",
                                f"plugin already configured in this scope ({seen[scope]})")
            seen[scope] = entry.entity


def _typeName(value: object) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean",
            list: "a list", dict: "a mapping", type(None): "nothing"}.get(
                type(value), type(value).__name__)


def _keyMatches(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    try:
        return key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt)
    except (AttributeError, ValueError, TypeError):
        return False


def parseConfig(document: object, source: str = "<config>",
                plugins: PluginCatalog | None = None) -> GatewayConfig:
    """Check a declarative document (already parsed) and resolve its references.

    With C{plugins}, plugin names must be registered and configs pass their schemas.
    """
    return _Reader(source, plugins).read(document)


def loadConfig(path: str | Path, plugins: PluginCatalog | None = None) -> GatewayConfig:
    """Read and check a declarative YAML (or JSON) file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(source, "file", None, f"cannot read: {e.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(source, "file", None, f"not valid YAML{where}") from None
    return parseConfig(document, source, plugins)
