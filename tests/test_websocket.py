"""WebSocket upgrades are tunnelled to the upstream, through the phases."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from kongtls.testing import ClientConnection, clientContext, inThread, routeTo
from tests.plugins import Probe
from tests.support import GatewayTestCase

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class UpgradeEcho(Protocol):
    """A raw upstream: answers the Upgrade with 101, then echoes bytes reversed."""

    def __init__(self) -> None:
        self.buffer = b""
        self.upgraded = False

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded:
            self.transport.write(data[::-1])
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        head, rest = self.buffer.split(b"\r\n\r\n", 1)
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        fields = {k.lower(): v for k, v in fields.items()}
        accept = base64.b64encode(hashlib.sha1(fields[b"sec-websocket-key"] + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                             b"\r\nX-Saw-Path: " + head.split(b" ")[1] + b"\r\n\r\n")
        self.upgraded = True
        if rest:
            self.transport.write(rest[::-1])


def talk(port: int, pki: Any) -> tuple[bytes, bytes]:
    conn = ClientConnection(port, clientContext(pki))
    key = base64.b64encode(os.urandom(16))
    sock = conn.sock
    sock.sendall(b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    head, extra = head.split(b"\r\n\r\n", 1)
    sock.sendall(b"hello tunnel")
    echoed = extra
    while len(echoed) < 12:
        echoed += sock.recv(4096)
    try:
        conn.close()
    except (OSError, ssl.SSLError):
        pass
    return head, echoed


class WebSocketTests(GatewayTestCase):
    async def test_upgrade_is_tunnelled(self) -> None:
        upstream = reactor.listenTCP(0, Factory.forProtocol(UpgradeEcho),
                                     interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        probe = Probe()
        gw = await self.gateway(document=routeTo(upstream.getHost().port, [
            {"name": "probe"}]), handlers={"probe": probe})
        head, echoed = await inThread(talk, gw.httpsPort, self.pki)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"sec-websocket-accept: ", head.lower())
        self.assertIn(b"x-saw-path: /chat", head.lower())
        self.assertEqual(echoed, b"lennut olleh")
        from twisted.internet.task import deferLater

        for _ in range(50):
            if probe.logs:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(probe.logs[0]["response"]["status"], 101)

    async def test_refused_upstream_is_502(self) -> None:
        from tests.support import freePort

        gw = await self.gateway(document=routeTo(freePort()))

        def attempt(port: int) -> bytes:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n")
            data = conn.sock.recv(4096)
            conn.sock.close()
            return data

        data = await inThread(attempt, gw.httpsPort)
        self.assertTrue(data.startswith(b"HTTP/1.1 502"), data)

    async def test_idle_sweep_leaves_tunnels_alone(self) -> None:
        """A tunnel is no keep-alive connection waiting for a request: the idle sweep
        must not close it, however long it lasts."""
        from twisted.internet.task import deferLater

        upstream = reactor.listenTCP(0, Factory.forProtocol(UpgradeEcho),
                                     interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))
        factory = gw.gateway.http1
        factory.idleTimeout = factory.headTimeout = 0.05

        def upgrade(port: int) -> ClientConnection:
            conn = ClientConnection(port, None)
            conn.sock.sendall(b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Key: a2V5\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.sock.recv(4096)
            return conn

        def talk(conn: ClientConnection) -> bytes:
            conn.sock.sendall(b"still here")
            echoed = b""
            while len(echoed) < 10:
                chunk = conn.sock.recv(4096)
                if not chunk:
                    break
                echoed += chunk
            conn.sock.close()
            return echoed

        conn = await inThread(upgrade, gw.httpPort)
        await deferLater(reactor, 0.2, lambda: None)
        factory.closeIdle()
        self.assertEqual(await inThread(talk, conn), b"ereh llits")


class TunnelHeadTests(TestCase):
    def test_a_refused_upgrade_keeps_its_status_and_reason(self) -> None:
        from kongtls.tunnel import formatHead

        self.assertTrue(formatHead(101, Headers()).startswith(
            b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertTrue(formatHead(404, Headers()).startswith(b"HTTP/1.1 404 Not Found\r\n"))
