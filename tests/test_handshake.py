"""The handshake phases: SNI certificate selection, which plugins run there, and a
failing handler aborting only its own handshake with a TLS alert."""

from __future__ import annotations

import re
import ssl

from twisted.internet.defer import ensureDeferred, gatherResults

from kongtls.testing import TestPKI, curl, fetch, fetchMany, routeTo, sClient, startEcho
from tests.plugins import Probe, Raiser
from tests.support import GatewayTestCase, sharedPKI


def certificates(pki: TestPKI) -> list[dict]:
    exact = pki.issue(pki.root, "api.example.com", name="api")
    wild = pki.issue(pki.root, "*.example.com", name="wild")
    return [
        {"id": "api", "cert": exact.fullChainPEM, "key": exact.keyPEM.decode(),
         "snis": [{"name": "api.example.com"}]},
        {"id": "wild", "cert": wild.fullChainPEM, "key": wild.keyPEM.decode(),
         "snis": ["*.example.com"]},
    ]


class CertificateSelectionTests(GatewayTestCase):
    """The certificate for an SNI: exact name, then wildcard, then the default."""

    async def served(self, sni: str | None) -> str:
        doc = routeTo(await startEcho(self.addCleanup), [],
                      certificates=certificates(self.pki))
        gw = await self.gateway(document=doc)
        args = ["-noservername"] if sni is None else []
        result = await sClient(gw.httpsPort, *args, sni=sni)
        subject = [ln for ln in result.out.splitlines() if ln.startswith("subject=")]
        return subject[0]

    async def test_exact_name(self) -> None:
        api = await self.served("api.example.com")
        wild = await self.served("www.example.com")
        self.assertNotEqual(api, wild)

    async def test_python_client_verifies_each_name(self) -> None:
        doc = routeTo(await startEcho(self.addCleanup), [],
                      certificates=certificates(self.pki))
        gw = await self.gateway(document=doc)
        for sni in ("api.example.com", "www.example.com", "localhost"):
            response = await fetch(gw.httpsPort, "/", pki=self.pki, sni=sni)
            self.assertEqual(response.status, 200, sni)

    async def test_wildcard_covers_one_label_only(self) -> None:
        doc = routeTo(await startEcho(self.addCleanup), [],
                      certificates=certificates(self.pki))
        gw = await self.gateway(document=doc)
        with self.assertRaises(ssl.SSLCertVerificationError):
            await fetch(gw.httpsPort, "/", pki=self.pki, sni="a.b.example.com")

    async def test_no_sni_gets_default(self) -> None:
        default = await self.served(None)
        self.assertIn("trustme", default)
        self.assertNotEqual(default, await self.served("api.example.com"))


class RouteScopedHandshakePluginTests(GatewayTestCase):
    """Better than Kong: a route's plugins run in the handshake when its snis match."""

    async def setUpGateway(self) -> tuple[int, Probe]:
        probe = Probe()
        echo = await startEcho(self.addCleanup)
        doc = {
            "_format_version": "3.0",
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}", "routes": [
                {"name": "mtls", "snis": ["mtls.example.com"], "paths": ["/"],
                 "plugins": [{"name": "probe",
                              "config": {"request": True, "exit": True}}]},
                {"name": "open", "paths": ["/"]},
            ]}],
        }
        gw = await self.gateway(document=doc, handlers={"probe": probe})
        return gw.httpsPort, probe

    async def test_route_plugin_requests_certificate_for_its_sni(self) -> None:
        port, probe = await self.setUpGateway()
        result = await sClient(port, "-tls1_2", sni="mtls.example.com")
        self.assertIn("Client Certificate Types", result.out)
        response = await fetch(port, "/", pki=None, sni="mtls.example.com",
                               clientCert=self.pki.client)
        self.assertEqual(response.json()["chain"], self.pki.client.fullChainPEM)

    async def test_other_snis_are_not_asked(self) -> None:
        port, probe = await self.setUpGateway()
        result = await sClient(port, "-tls1_2", sni="open.example.com")
        self.assertNotIn("Client Certificate Types", result.out)
        self.assertEqual(probe.handshakes, [])

    async def test_service_plugins_apply_to_their_routes_snis(self) -> None:
        probe = Probe()
        echo = await startEcho(self.addCleanup)
        doc = {"_format_version": "3.0", "services": [{
            "name": "echo", "url": f"http://127.0.0.1:{echo}",
            "routes": [{"name": "m", "snis": ["svc.example.com"]}],
            "plugins": [{"name": "probe", "config": {"request": True}}]}]}
        gw = await self.gateway(document=doc, handlers={"probe": probe})
        asked = await sClient(gw.httpsPort, "-tls1_2", sni="svc.example.com")
        self.assertIn("Client Certificate Types", asked.out)
        notAsked = await sClient(gw.httpsPort, "-tls1_2", sni="other.example.com")
        self.assertNotIn("Client Certificate Types", notAsked.out)


class HandshakeFailureTests(GatewayTestCase):
    """A handler that raises or waits aborts its handshake with an alert; others go on."""

    async def gatewayFailingFor(self, phase: str) -> int:
        echo = await startEcho(self.addCleanup)
        doc = {
            "_format_version": "3.0",
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}", "routes": [
                {"name": "bad", "snis": ["bad.example.com"],
                 "plugins": [{"name": "raiser", "config": {"phase": phase}}]},
                {"name": "good", "paths": ["/"]},
            ]}],
        }
        gw = await self.gateway(document=doc, handlers={"raiser": Raiser()})
        return gw.httpsPort

    async def check(self, phase: str) -> None:
        port = await self.gatewayFailingFor(phase)
        failed = await sClient(port, sni="bad.example.com")
        self.assertIn("alert internal error", failed.err)
        self.assertNotIn("BEGIN CERTIFICATE", failed.out)
        for version in ("1.2", "1.3"):
            with self.assertRaises(ssl.SSLError) as caught:
                await fetch(port, "/", pki=self.pki, sni="bad.example.com",
                            tlsVersion=version)
            self.assertIn("INTERNAL_ERROR", str(caught.exception))
        # Others, before and after, are served.
        good = await gatherResults([
            ensureDeferred(fetch(port, "/", pki=self.pki)) for _ in range(3)])
        self.assertEqual([r.status for r in good], [200, 200, 200])
        self.assertEqual(len(self.flushLoggedErrors()), 3)

    async def test_certificate_raises(self) -> None:
        await self.check("certificate")

    async def test_client_hello_raises(self) -> None:
        await self.check("client_hello")

    async def test_client_hello_returns_unfired_deferred(self) -> None:
        await self.check("client_hello-deferred")

    async def test_certificate_returns_coroutine(self) -> None:
        await self.check("certificate-coroutine")

    async def test_fired_deferred_is_fine(self) -> None:
        port = await self.gatewayFailingFor("certificate-fired")
        response = await fetch(port, "/", sni="bad.example.com")
        self.assertEqual(response.status, 200)

    async def test_open_connection_survives_another_handshake_failing(self) -> None:
        from kongtls.testing import ClientConnection, clientContext, inThread

        port = await self.gatewayFailingFor("certificate")
        conn = await inThread(ClientConnection, port, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        first = await inThread(conn.request, "/")
        await sClient(port, sni="bad.example.com")
        second = await inThread(conn.request, "/")
        self.assertEqual((first.status, second.status), (200, 200))
        self.flushLoggedErrors()


class KeepAliveContextTests(GatewayTestCase):
    """04-plugins_triggering_spec "certificate phase clears context, fix #7054"."""

    async def test_two_routes_on_one_connection_see_their_own_plugins(self) -> None:
        from tests.plugins import Tagger

        echo = await startEcho(self.addCleanup)
        doc = {"_format_version": "3.0", "services": [{
            "name": "echo", "url": f"http://127.0.0.1:{echo}", "routes": [
                {"name": "one", "paths": ["/one"],
                 "plugins": [{"name": "tagger", "config": {"tag": "one"}}]},
                {"name": "two", "paths": ["/two"],
                 "plugins": [{"name": "tagger", "config": {"tag": "two"}}]}]}],
            "plugins": [{"name": "tagger", "config": {"tag": "global"}}]}
        gw = await self.gateway(document=doc, handlers={"tagger": Tagger()})
        one, two, three = await fetchMany(gw.httpsPort, ["/one", "/two", "/three"],
                                          pki=self.pki)
        self.assertEqual(one.json()["headers"]["x-tags"], "one")
        self.assertEqual(one.headers["x-tagged"], "one")
        self.assertEqual(two.json()["headers"]["x-tags"], "two")
        self.assertEqual(two.headers["x-tagged"], "two")
        self.assertEqual(three.status, 404)
        self.assertEqual(three.headers["x-tagged"], "global")

    async def test_handshake_ctx_does_not_reach_requests(self) -> None:
        class Stash:
            PRIORITY = 10

            def certificate(self, kong, conf):  # type: ignore[no-untyped-def]
                kong.ctx.shared["from_handshake"] = True
                kong.ctx.plugin["x"] = 1

            def access(self, kong, conf):  # type: ignore[no-untyped-def]
                kong.response.exit(200, {"shared": dict(kong.ctx.shared),
                                         "plugin": dict(kong.ctx.plugin)})

        gw = await self.gateway([{"name": "stash"}], {"stash": Stash()})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.json(), {"shared": {}, "plugin": {}})


class HTTP2ALPNTests(GatewayTestCase):
    """disable_http2_alpn() in client_hello: curl --http2 then speaks HTTP/1.1."""

    async def test_h2_by_default(self) -> None:
        gw = await self.gateway()
        result = await curl("-k", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                            f"https://127.0.0.1:{gw.httpsPort}/")
        self.assertEqual(result.out, "2")

    async def test_disabled_h2_gives_http11(self) -> None:
        class NoH2:
            def client_hello(self, kong, conf):  # type: ignore[no-untyped-def]
                ok, err = kong.client.tls.disable_http2_alpn()
                assert ok is True and err is None

        gw = await self.gateway([{"name": "noh2"}], {"noh2": NoH2()})
        result = await curl("-k", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                            f"https://127.0.0.1:{gw.httpsPort}/")
        self.assertEqual(result.out, "1.1")
        response = await fetch(gw.httpsPort, "/", pki=self.pki, alpn=["h2", "http/1.1"])
        self.assertEqual(response.alpn, "http/1.1")

    async def test_pdk_works_on_http2_streams(self) -> None:
        import json

        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {"request": True,
                                                              "exit": True}}],
                                {"probe": probe})
        result = await curl("-k", "--http2", "--cert", self.pki.client.certFile,
                            "--key", self.pki.client.keyFile, "-w", "\n%{http_version}",
                            f"https://127.0.0.1:{gw.httpsPort}/")
        body, version = result.out.rsplit("\n", 1)
        self.assertEqual(version, "2")
        report = json.loads(body)
        self.assertEqual(report["chain"], self.pki.client.fullChainPEM)
        self.assertEqual(report["facts"]["ALPN"], "h2")
        self.assertEqual(probe.logs[0]["request"]["tls"]["version"], "TLSv1.3")


del sharedPKI


class HelloRetryTests(GatewayTestCase):
    """A TLS 1.3 HelloRetryRequest brings a second ClientHello on the same connection."""

    async def test_phases_run_once_and_ca_names_still_sent(self) -> None:
        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {
            "request": True, "ca_certs": [self.pki.caPEM(self.pki.root)]}}],
            {"probe": probe})
        result = await sClient(gw.httpsPort, "-tls1_3", "-groups", "P-384:X25519",
                               "-msg")
        # s_client shows the HelloRetryRequest as a first ServerHello.
        self.assertEqual(len(re.findall(r"<<< TLS 1\.3, Handshake \[length \w+\], "
                                        r"ServerHello", result.out)), 2)
        self.assertEqual(len(probe.handshakes), 1)
        section = result.out.split("Acceptable client certificate CA names", 1)[1]
        self.assertIn("kongtls test root", section.split("---", 1)[0])
        # and the names were taken off again: a connection that asks with no list
        # gets none.
        plain = await self.gateway([{"name": "probe", "config": {"request": True}}],
                                   {"probe": Probe()})
        clean = await sClient(plain.httpsPort, "-tls1_3")
        self.assertIn("No client certificate CA names sent", clean.out)


class H2LoadTests(GatewayTestCase):
    async def test_h2load_through_the_gateway(self) -> None:
        from kongtls.testing import run

        probe = Probe()
        gw = await self.gateway([{"name": "probe"}], {"probe": probe})
        result = await run("h2load", ["-n", "200", "-c", "4", "-m", "8",
                                      f"https://127.0.0.1:{gw.httpsPort}/h2"])
        self.assertIn("200 succeeded, 0 failed, 0 errored", result.out, result.out)
        self.assertIn("Application protocol: h2", result.out)
        self.assertEqual(len(probe.logs), 200)
        self.assertEqual({e["response"]["status"] for e in probe.logs}, {200})
