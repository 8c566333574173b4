"""``twistd kongtls`` as a user runs it: a config file, --plugin, curl and openssl."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import yaml

from kongtls.testing import curl, run, sClient, startEcho
from tests.support import ChildProcess, GatewayTestCase, freePort, twistdExecutable

HERE = os.path.dirname(os.path.abspath(__file__))


class TwistdTests(GatewayTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kongtls-twistd-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        # Test plugins go to a directory of their own: the child imports kongtls from
        # the installed copy, not from this checkout.
        shutil.copy(os.path.join(HERE, "plugins.py"),
                    os.path.join(self.dir, "kongtls_test_plugins.py"))

    def write(self, name: str, document: object) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            if isinstance(document, str):
                f.write(document)
            else:
                yaml.safe_dump(document, f)
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = self.dir
        return env

    async def twistd(self, *args: str, waitFor: int | None = None) -> ChildProcess:
        argv = [twistdExecutable(), "-n", "--pidfile=", "--logfile=-", "kongtls", *args]
        child = ChildProcess(argv, self.env(), self.dir)
        self.addCleanup(child.stop)
        if waitFor is not None:
            await child.waitForPort(waitFor)
        return child

    async def test_config_and_plugin_from_the_command_line(self) -> None:
        echo = await startEcho(self.addCleanup)
        conf = self.write("kong.yml", {
            "_format_version": "3.0",
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}",
                          "routes": [{"name": "all", "paths": ["/"]}]}],
            "plugins": [{"name": "require-cert"}],
        })
        https, http = freePort(), freePort()
        await self.twistd("--config", conf, "--plugin",
                          "require-cert=kongtls_test_plugins:RequireCert",
                          "--https", f"tcp:{https}:interface=127.0.0.1",
                          "--http", f"tcp:{http}:interface=127.0.0.1",
                          "--ssl-cert", self.pki.server.certFile,
                          "--ssl-key", self.pki.server.keyFile, waitFor=https)
        url = f"https://localhost:{https}/hello"
        resolve = f"localhost:{https}:127.0.0.1"
        refused = await curl("--cacert", self.pki.rootFile, "--resolve", resolve,
                             "-w", "\n%{http_code}", url)
        self.assertTrue(refused.out.endswith("\n401"), refused.out + refused.err)
        allowed = await curl("--cacert", self.pki.rootFile, "--resolve", resolve,
                             "--cert", self.pki.client.certFile,
                             "--key", self.pki.client.keyFile, url)
        echoed = json.loads(allowed.out)
        self.assertEqual(echoed["path"], "/hello")
        self.assertEqual(echoed["headers"]["x-client-chain-length"], "2")
        plain = await curl("-w", "%{http_code}", "-o", "/dev/null",
                           f"http://127.0.0.1:{http}/")
        self.assertEqual(plain.out, "401")

    async def test_demo_without_config(self) -> None:
        https, http = freePort(), freePort()
        child = await self.twistd("--https", f"tcp:{https}:interface=127.0.0.1",
                                  "--http", f"tcp:{http}:interface=127.0.0.1", waitFor=https)
        without = json.loads((await curl("-k", f"https://127.0.0.1:{https}/demo")).out)
        self.assertEqual(without["headers"]["x-tls-client-cert-sent"], "no")
        withCert = json.loads((await curl(
            "-k", "--cert", self.pki.client.certFile, "--key", self.pki.client.keyFile,
            f"https://127.0.0.1:{https}/demo")).out)
        self.assertEqual(withCert["headers"]["x-tls-client-cert-sent"], "yes")
        self.assertIn("kongtls test client",
                      withCert["headers"]["x-tls-client-cert-subject"])
        shown = await sClient(https, "-tls1_2")
        self.assertIn("Client Certificate Types", shown.out)
        # The started gateway's objects are out of the garbage collector's sight.
        self.assertIn("startup objects frozen out of garbage collection", child.out.decode())

    async def check_refused(self, document: object, *expected: str) -> str:
        conf = self.write("bad.yml", document)
        child = await self.twistd("--config", conf, "--https", f"tcp:{freePort()}:"
                                  "interface=127.0.0.1", "--http",
                                  f"tcp:{freePort()}:interface=127.0.0.1")
        code = await child.ended
        output = child.out.decode()
        self.assertNotEqual(code, 0)
        lines = [ln for ln in output.splitlines() if ln.startswith("kongtls: ")]
        self.assertEqual(len(lines), 1, output)
        for text in (conf, *expected):
            self.assertIn(text, lines[0])
        self.assertNotIn("Traceback", output)
        return lines[0]

    async def test_config_error_names_entity_and_field(self) -> None:
        await self.check_refused({
            "_format_version": "3.0",
            "services": [{"name": "echo", "url": "http://127.0.0.1:1",
                          "routes": [{"name": "r", "paths": ["nope"]}]}]},
            "route 'r'", "paths")

    async def test_unknown_plugin_is_refused(self) -> None:
        await self.check_refused({"_format_version": "3.0",
                                  "plugins": [{"name": "no-such-plugin"}]},
                                 "plugins[0]", "name", "no-such-plugin")

    async def test_bad_yaml_is_refused(self) -> None:
        await self.check_refused("services: [\n", "not valid YAML")

    async def test_help_lists_the_options(self) -> None:
        result = await run(twistdExecutable(), ["kongtls", "--help"], env=self.env())
        for option in ("--config", "--https", "--http", "--ssl-cert", "--ssl-key",
                       "--plugin", "--ssl-session-tickets", "--ssl-session-cache"):
            self.assertIn(option, result.out)

    async def test_sighup_reloads_and_keeps_config_on_error(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        echo = await startEcho(self.addCleanup)

        def document(path: str) -> dict:
            return {"_format_version": "3.0",
                    "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}",
                                  "routes": [{"name": "r", "paths": [path]}]}]}

        conf = self.write("kong.yml", document("/old"))
        http = freePort()
        child = await self.twistd("--config", conf, "--http",
                                  f"tcp:{http}:interface=127.0.0.1", waitFor=http)

        async def status(path: str) -> str:
            result = await curl("-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{http}{path}")
            return result.out

        self.assertEqual(await status("/old"), "200")
        self.write("kong.yml", document("/new"))
        child.transport.signalProcess("HUP")
        for _ in range(50):
            if await status("/new") == "200":
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(await status("/new"), "200")
        self.assertEqual(await status("/old"), "404")

        self.write("kong.yml", "_format_version: '3.0'\nroutes: [{paths: ['/x']}]\n")
        child.transport.signalProcess("HUP")
        for _ in range(50):
            if b"reload refused" in child.out:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertIn(b"reload refused, running configuration kept", child.out)
        self.assertIn(b"field 'service'", child.out)
        self.assertEqual(await status("/new"), "200")

    async def test_access_log_lines(self) -> None:
        echo = await startEcho(self.addCleanup)
        conf = self.write("kong.yml", {
            "_format_version": "3.0",
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}",
                          "routes": [{"name": "all", "paths": ["/"]}]}]})
        logPath = os.path.join(self.dir, "access.log")
        https = freePort()
        await self.twistd("--config", conf, "--access-log", logPath, "--https",
                          f"tcp:{https}:interface=127.0.0.1", "--http",
                          f"tcp:{freePort()}:interface=127.0.0.1", waitFor=https)
        await curl("-k", f"https://127.0.0.1:{https}/one?x=1")
        await curl("-k", "--cert", self.pki.client.certFile, "--key",
                   self.pki.client.keyFile, f"https://127.0.0.1:{https}/two")
        with open(logPath) as f:
            entries = [json.loads(line) for line in f]
        self.assertEqual([e["request"]["uri"] for e in entries], ["/one?x=1", "/two"])
        first = entries[0]
        self.assertEqual(first["response"]["status"], 200)
        self.assertEqual(first["route"]["name"], "all")
        self.assertEqual(first["service"]["name"], "echo")
        self.assertEqual(first["client_ip"], "127.0.0.1")
        self.assertEqual(first["request"]["tls"]["client_verify"], "NONE")
        self.assertIn("proxy", first["latencies"])

    async def test_busy_port_stops_twistd_with_a_reason(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        port = busy.getHost().port
        child = await self.twistd("--https", f"tcp:{port}:interface=127.0.0.1",
                                  "--http", f"tcp:{freePort()}:interface=127.0.0.1")
        await child.ended
        self.assertIn(b"kongtls cannot listen", child.out)
        self.assertIn(b"Address already in use", child.out)
