"""The embedding API: examples/embedded.py runs as a user would run it, and a gateway
lives beside another service in the test's own reactor, reloads and stops."""

from __future__ import annotations

import os
import sys

from twisted.internet.task import deferLater

from kongtls.gateway import Gateway, GatewayService, GatewaySettings
from kongtls.testing import curl, fetch, routeTo, startEcho
from tests.support import ChildProcess, GatewayTestCase

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "examples", "embedded.py")


class ExampleProgramTests(GatewayTestCase):
    async def test_example_program(self) -> None:
        from twisted.internet import reactor

        child = ChildProcess([sys.executable, EXAMPLE, "tcp:0:interface=127.0.0.1"],
                             dict(os.environ), os.path.dirname(EXAMPLE))
        self.addCleanup(child.stop)
        for _ in range(150):
            if b"gateway on https://" in child.out or not child.running:
                break
            await deferLater(reactor, 0.1, lambda: None)
        line = child.out.decode().split("gateway on ", 1)[1].split()[0]
        refused = await curl("-k", "-w", "%{http_code}", "-o", "/dev/null", line)
        self.assertEqual(refused.out, "401")
        allowed = await curl("-k", "--cert", self.pki.client.certFile,
                             "--key", self.pki.client.keyFile, line)
        self.assertIn("hello, ", allowed.out)
        self.assertIn("kongtls test client", allowed.out)


class InProcessTests(GatewayTestCase):
    async def test_reload_keeps_running_config_on_error(self) -> None:
        from twisted.internet import reactor

        from kongtls.config import ConfigError

        echo = await startEcho(self.addCleanup)
        gateway = Gateway.fromDict(reactor, routeTo(echo),
                                   settings=GatewaySettings(entryPoints=False))
        self.addCleanup(gateway.stop)
        port = (await gateway.listen("tcp:0:interface=127.0.0.1")).getHost().port
        self.assertEqual((await fetch(port, "/")).status, 200)
        with self.assertRaises(ConfigError):
            gateway.reload({"_format_version": "3.0", "routes": [{"paths": ["/"]}]})
        self.assertEqual((await fetch(port, "/")).status, 200)
        moved = routeTo(echo)
        moved["services"][0]["routes"][0]["paths"] = ["/new"]
        gateway.reload(moved)
        self.assertEqual((await fetch(port, "/")).status, 404)
        self.assertEqual((await fetch(port, "/new")).status, 200)

    async def test_as_an_iservice(self) -> None:
        from twisted.internet import reactor

        echo = await startEcho(self.addCleanup)
        gateway = Gateway.fromDict(reactor, routeTo(echo),
                                   settings=GatewaySettings(entryPoints=False))
        service = GatewayService(gateway, ["tcp:0:interface=127.0.0.1"], [])
        service.startService()
        assert service.listening is not None
        await service.listening
        port = gateway.ports[0].getHost().port
        self.assertEqual((await fetch(port, "/")).status, 200)
        await service.stopService()
        self.assertEqual(gateway.ports, ())


class ReloadUnderLoadTests(GatewayTestCase):
    async def test_no_request_fails_while_reloading(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred, gatherResults
        from twisted.internet.task import deferLater

        from kongtls.testing import fetchMany

        echo = await startEcho(self.addCleanup)
        gw = await self.gateway(document=routeTo(echo))
        stop = False

        async def reloads() -> int:
            count = 0
            while not stop:
                tag = {"name": "tls-facts"} if count % 2 else None
                gw.gateway.reload(routeTo(echo, [tag] if tag else []))
                count += 1
                await deferLater(reactor, 0.005, lambda: None)
            return count

        reloading = ensureDeferred(reloads())
        clients = [ensureDeferred(fetchMany(gw.httpsPort, ["/"] * 60, pki=self.pki))
                   for _ in range(3)]
        results = await gatherResults(clients)
        stop = True
        count = await reloading
        statuses = [r.status for batch in results for r in batch]
        self.assertEqual(len(statuses), 180)
        self.assertEqual(set(statuses), {200})
        self.assertGreater(count, 5)

    async def test_new_certificates_apply_to_new_handshakes(self) -> None:
        from kongtls.testing import ClientConnection, clientContext, inThread

        echo = await startEcho(self.addCleanup)
        gw = await self.gateway(document=routeTo(echo))
        # not verified: before the reload, api.example.com gets the default certificate
        kept = await inThread(ClientConnection, gw.httpsPort, clientContext(None),
                              "api.example.com")
        self.addCleanup(inThread, kept.close)
        self.assertEqual((await inThread(kept.request, "/")).status, 200)
        api = self.pki.issue(self.pki.root, "api.example.com", name="api-reload")
        gw.gateway.reload(routeTo(echo, certificates=[{
            "cert": api.fullChainPEM, "key": api.keyPEM.decode(),
            "snis": ["api.example.com"]}]))
        fresh = await fetch(gw.httpsPort, "/", pki=self.pki, sni="api.example.com")
        self.assertEqual(fresh.status, 200)  # verified against the new certificate
        self.assertEqual((await inThread(kept.request, "/")).status, 200)


class EmbeddedListenFailureTests(GatewayTestCase):
    async def test_failure_to_listen_leaves_the_programs_reactor_running(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        gateway = Gateway.fromDict(reactor, routeTo(1),
                                   settings=GatewaySettings(entryPoints=False))
        service = GatewayService(gateway, [f"tcp:{busy.getHost().port}:interface=127.0.0.1"],
                                 [])
        stopped: list[bool] = []
        self.patch(reactor, "stop", lambda: stopped.append(True))
        service.startService()
        assert service.listening is not None
        await service.listening
        self.assertEqual(stopped, [])
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        await service.stopService()
