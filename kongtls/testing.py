"""Helpers for testing plugins (and kongtls itself) over real TLS on loopback.

Under trial::

    class MyPluginTests(TestCase):
        async def test_needs_certificate(self):
            pki = TestPKI()
            gw = await startGateway(self.addCleanup, routeTo(await startEcho(self.addCleanup)),
                                    plugins={"mine": MyPlugin})
            response = await fetch(gw.httpsPort, "/", pki=pki, clientCert=pki.client)
            self.assertEqual(response.status, 200)

Under pytest-twisted the same calls work with a cleanup list the test runs at the end
(see README). Blocking client work (Python's ``ssl``) runs in the reactor's thread pool,
never on the reactor thread; ``openssl`` and ``curl`` run as child processes.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.internet.utils import getProcessOutputAndValue

from kongtls.certificates import KeyedChain, SessionPolicy
from kongtls.echo import echoSite
from kongtls.gateway import Gateway, GatewaySettings

Cleanup = Callable[..., Any]


class Cleanups:
    """Collects cleanups as trial's C{addCleanup} does, for pytest-twisted tests.

        @pytest.fixture
        def cleanups():
            collected = Cleanups()
            yield collected
            pytest_twisted.blockon(collected.run())
    """

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> None:
        self._calls.append((f, args))

    def run(self) -> Deferred[None]:
        """Run them newest first, waiting for each that returns a Deferred."""
        async def runAll() -> None:
            while self._calls:
                f, args = self._calls.pop()
                result = f(*args)
                if isinstance(result, Deferred):
                    await result
        return Deferred.fromCoroutine(runAll())


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class _TempDir:
    """A directory for PEM files, removed at cleanup."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kongtls-test-")
        self.path = self._dir.name

    def write(self, name: str, data: bytes | str) -> str:
        path = os.path.join(self.path, name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path

    def close(self) -> None:
        self._dir.cleanup()


@dataclass
class Identity:
    """A certificate chain (leaf first, no root) and key, as PEM and as files."""

    chainPEM: list[bytes]
    keyPEM: bytes
    certFile: str = ""
    keyFile: str = ""

    @property
    def certificates(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(p) for p in self.chainPEM]

    @property
    def leafPEM(self) -> str:
        return self.chainPEM[0].decode()

    @property
    def fullChainPEM(self) -> str:
        return b"".join(self.chainPEM).decode()

    def keyedChain(self) -> KeyedChain:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        return KeyedChain(tuple(self.certificates), load_pem_private_key(self.keyPEM, None))


class TestPKI:
    """A root CA, an intermediate CA, and server and client certificates under them.

    ``server`` (for localhost and 127.0.0.1) is issued by the root; ``client`` by the
    intermediate, so its chain is leaf then intermediate. ``otherCA`` is unrelated.
    """

    __test__ = False  # not a test class for pytest

    def __init__(self, serverNames: Sequence[str] = ("localhost", "127.0.0.1")) -> None:
        import trustme  # the "test" extra

        self._files = _TempDir()
        self.root = trustme.CA(organization_name="kongtls test root")
        self.intermediate = self.root.create_child_ca()
        self.otherCA = trustme.CA(organization_name="kongtls other root")
        self.rootFile = self._files.write("root.pem", self.root.cert_pem.bytes())
        self.server = self.issue(self.root, *serverNames, name="server")
        self.client = self.issue(self.intermediate, "client@example.com",
                                 name="client", commonName="kongtls test client")

    def issue(self, ca: Any, *identities: str, name: str,
              commonName: str | None = None) -> Identity:
        leaf = ca.issue_cert(*identities, common_name=commonName)
        ident = Identity([b.bytes() for b in leaf.cert_chain_pems], leaf.private_key_pem.bytes())
        ident.certFile = self._files.write(f"{name}.crt", b"".join(ident.chainPEM))
        ident.keyFile = self._files.write(f"{name}.key", ident.keyPEM)
        return ident

    def caPEM(self, ca: Any) -> str:
        return ca.cert_pem.bytes().decode()

    def caCertificate(self, ca: Any) -> x509.Certificate:
        return x509.load_pem_x509_certificate(ca.cert_pem.bytes())

    def close(self) -> None:
        self._files.close()


@dataclass
class RunningGateway:
    gateway: Gateway
    httpsPort: int
    httpPort: int

    def stop(self) -> Deferred[None]:
        return self.gateway.stop()


async def startGateway(addCleanup: Cleanup, document: Mapping[str, Any],
                       plugins: Mapping[str, Any] | None = None,
                       settings: GatewaySettings | None = None,
                       defaultCertificate: Identity | None = None,
                       sessions: SessionPolicy | None = None) -> RunningGateway:
    """A gateway on ephemeral loopback ports (HTTPS and HTTP), stopped at cleanup."""
    reactor = _reactor()
    settings = settings or GatewaySettings(entryPoints=False)
    if defaultCertificate is not None:
        settings.defaultCertificate = defaultCertificate.keyedChain()
    if sessions is not None:
        settings.sessions = sessions
    gateway = Gateway.fromDict(reactor, document, plugins, settings)
    addCleanup(gateway.stop)
    https = await gateway.listen("tcp:0:interface=127.0.0.1")
    http = await gateway.listen("tcp:0:interface=127.0.0.1", tls=False)
    return RunningGateway(gateway, _portOf(https), _portOf(http))


def _portOf(port: Any) -> int:
    return int(port.getHost().port)


async def startEcho(addCleanup: Cleanup) -> int:
    """A real HTTP echo upstream on an ephemeral loopback port; returns the port."""
    reactor = _reactor()
    port = reactor.listenTCP(0, echoSite(), interface="127.0.0.1")
    addCleanup(port.stopListening)
    return int(port.getHost().port)


def routeTo(echoPort: int, plugins: Sequence[Mapping[str, Any]] = (),
            **extra: Any) -> dict[str, Any]:
    """A declarative document: one service to C{echoPort}, route ``/``, global C{plugins}."""
    document: dict[str, Any] = {
        "_format_version": "3.0",
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{echoPort}",
                      "routes": [{"name": "echo", "paths": ["/"]}]}],
        "plugins": list(plugins),
    }
    document.update(extra)
    return document


@dataclass
class Response:
    """What a test client saw: HTTP status, headers, body, and TLS facts."""

    status: int
    headers: dict[str, str]
    body: bytes
    tlsVersion: str | None = None
    alpn: str | None = None
    session: ssl.SSLSession | None = None
    sessionReused: bool = False
    context: ssl.SSLContext | None = None

    def json(self) -> Any:
        import json

        return json.loads(self.body)


TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


_contexts: dict[tuple[int, int, str | None, tuple[str, ...]], ssl.SSLContext] = {}


def clientContext(pki: TestPKI | None = None, clientCert: Identity | None = None,
                  tlsVersion: str | None = None, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A Python ``ssl`` client context trusting C{pki}'s root (or nothing checked).

    Contexts are kept per set of options: Python only offers a saved session through
    the context that made it, so a later L{fetch} with C{session=} just works.
    """
    key = (id(pki), id(clientCert), tlsVersion, tuple(alpn))
    cached = _contexts.get(key)
    if cached is None:
        cached = _contexts[key] = _newClientContext(pki, clientCert, tlsVersion, alpn)
    return cached


def _newClientContext(pki: TestPKI | None, clientCert: Identity | None,
                      tlsVersion: str | None, alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pki is not None:
        ctx.load_verify_locations(pki.rootFile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if clientCert is not None:
        ctx.load_cert_chain(clientCert.certFile, clientCert.keyFile)
    if tlsVersion is not None:
        ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[tlsVersion]
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class ClientConnection:
    """One blocking keep-alive HTTPS (or HTTP) connection; use it from a thread."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None, sni: str | None = "localhost",
                 session: ssl.SSLSession | None = None, timeout: float = 10.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = raw
        self.tls: ssl.SSLSocket | None = None
        if ctx is not None:
            self.tls = ctx.wrap_socket(raw, server_hostname=sni, session=session)
            self.sock = self.tls
        self.host = sni or "127.0.0.1"

    def request(self, path: str, method: str = "GET", headers: Mapping[str, str] | None = None,
                body: bytes = b"") -> Response:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        reply = http.client.HTTPResponse(self.sock, method=method)
        reply.begin()
        data = reply.read()
        response = Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)
        if self.tls is not None:
            response.context = self.tls.context
            response.tlsVersion = self.tls.version()
            response.alpn = self.tls.selected_alpn_protocol()
            response.session = self.tls.session
            response.sessionReused = bool(self.tls.session_reused)
        return response

    def close(self) -> None:
        try:
            if self.tls is not None:
                self.tls.unwrap()
        except (OSError, ssl.SSLError):
            pass
        self.sock.close()


def inThread(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Run blocking client code off the reactor thread."""
    reactor = _reactor()
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)


def _fetchBlocking(port: int, paths: Sequence[str], ctx: ssl.SSLContext | None,
                   sni: str | None, session: ssl.SSLSession | None,
                   headers: Mapping[str, str] | None) -> list[Response]:
    conn = ClientConnection(port, ctx, sni=sni, session=session)
    try:
        return [conn.request(p, headers=headers) for p in paths]
    finally:
        conn.close()


async def fetchMany(port: int, paths: Sequence[str], *, tls: bool = True,
                    pki: TestPKI | None = None, clientCert: Identity | None = None,
                    tlsVersion: str | None = None, alpn: Sequence[str] = (),
                    sni: str | None = "localhost",
                    session: ssl.SSLSession | Response | None = None,
                    headers: Mapping[str, str] | None = None) -> list[Response]:
    """GET each path in turn over one keep-alive connection.

    C{session} offers a saved session: pass the earlier L{Response} (its context is
    reused, as Python requires), or its C{session} with the same options as before.
    """
    ctx = clientContext(pki, clientCert, tlsVersion, alpn) if tls else None
    if isinstance(session, Response):
        ctx, session = session.context, session.session
    result: list[Response] = await inThread(_fetchBlocking, port, paths, ctx, sni, session,
                                            headers)
    return result


async def fetch(port: int, path: str = "/", **kwargs: Any) -> Response:
    """GET one path over a new connection (see L{fetchMany} for the options)."""
    return (await fetchMany(port, [path], **kwargs))[0]


@dataclass
class ProcessResult:
    out: str
    err: str
    code: int


async def run(executable: str, args: Sequence[str], stdin: bytes = b"",
              env: Mapping[str, str] | None = None, cwd: str | None = None) -> ProcessResult:
    """Run a program (openssl, curl, twistd...) as a child process of the reactor."""
    reactor = _reactor()
    if stdin:
        # getProcessOutputAndValue has no stdin; a shell pipes it from a temp file.
        tmp = tempfile.NamedTemporaryFile(delete=False)
        tmp.write(stdin)
        tmp.close()
        try:
            out, err, code = await getProcessOutputAndValue(
                "/bin/sh", ["-c", '"$0" "$@" < "$KONGTLS_STDIN"', executable, *args],
                env={**(env or os.environ), "KONGTLS_STDIN": tmp.name}, path=cwd,
                reactor=reactor)
        finally:
            os.unlink(tmp.name)
    else:
        out, err, code = await getProcessOutputAndValue(
            executable, list(args), env=dict(env or os.environ), path=cwd, reactor=reactor)
    return ProcessResult(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code)


async def sClient(port: int, *args: str, sni: str | None = "localhost",
                  stdin: bytes = b"Q\n") -> ProcessResult:
    """``openssl s_client`` against 127.0.0.1:C{port}."""
    argv = ["s_client", "-connect", f"127.0.0.1:{port}"]
    if sni:
        argv += ["-servername", sni]
    return await run("openssl", [*argv, *args], stdin=stdin)


async def curl(*args: str) -> ProcessResult:
    return await run("curl", ["-sS", "--max-time", "10", *args])
