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
