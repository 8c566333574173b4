"""Upstream behaviour: timeouts (504), retries across targets, weighted round-robin,
passive health, set_target, and https services with verification and client certs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet import ssl as tssl
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from kongtls.balancer import UNHEALTHY_SECONDS, Balancer
from kongtls.config import Target, Upstream
from kongtls.echo import echoSite
from kongtls.testing import fetch, fetchMany, startEcho
from tests.plugins import Exiter
from tests.support import GatewayTestCase, freePort


def service(url: str, **extra: Any) -> dict[str, Any]:
    return {"_format_version": "3.0",
            "services": [{"name": "svc", "url": url, **extra,
                          "routes": [{"name": "r", "paths": ["/"]}]}]}


class Silent(Protocol):
    """Accepts and never answers."""


class TimeoutTests(GatewayTestCase):
    async def test_read_timeout_is_504(self) -> None:
        port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        gw = await self.gateway(document=service(
            f"http://127.0.0.1:{port.getHost().port}", connect_timeout=100,
            write_timeout=100, read_timeout=200))
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 504)
        self.assertEqual(response.body, b'{"message":"The upstream server is timing out"}')

    async def test_bad_timeout_value_is_refused(self) -> None:
        from kongtls.config import ConfigError, parseConfig

        with self.assertRaises(ConfigError) as caught:
            parseConfig(service("http://127.0.0.1:1", read_timeout="soon"), "kong.yml")
        self.assertIn("'read_timeout'", str(caught.exception))


class BalancerUnitTests(TestCase):
    def test_weighted_round_robin(self) -> None:
        a, b = Target("a", 1, 300), Target("b", 1, 100)
        balancer = Balancer(Upstream("u", [a, b]), lambda: 0.0)
        picks = Counter(balancer.pick().host for _ in range(8))  # type: ignore[union-attr]
        self.assertEqual(picks, {"a": 6, "b": 2})

    def test_failing_target_is_skipped_for_a_while(self) -> None:
        now = [0.0]
        a, b = Target("a", 1), Target("b", 1)
        balancer = Balancer(Upstream("u", [a, b], tcpFailures=2), lambda: now[0])
        balancer.failed(a, timeout=False)
        balancer.failed(a, timeout=False)
        self.assertEqual({balancer.pick().host for _ in range(4)}, {"b"})  # type: ignore
        now[0] += UNHEALTHY_SECONDS + 1
        self.assertEqual({balancer.pick().host for _ in range(4)}, {"a", "b"})  # type: ignore

    def test_all_down_still_tries(self) -> None:
        a = Target("a", 1)
        balancer = Balancer(Upstream("u", [a], tcpFailures=1), lambda: 0.0)
        balancer.failed(a, timeout=False)
        self.assertIs(balancer.pick(), a)


class UpstreamEntityTests(GatewayTestCase):
    def document(self, targets: list[dict[str, Any]], plugins: list[dict] = ()) -> dict:
        doc = service("http://backend:80", plugins=list(plugins))
        doc["upstreams"] = [{"name": "backend", "targets": targets}]
        return doc

    async def test_retries_move_to_the_next_target(self) -> None:
        exiter = Exiter()
        echo = await startEcho(self.addCleanup)
        gw = await self.gateway(document=self.document(
            [{"target": f"127.0.0.1:{freePort()}"}, {"target": f"127.0.0.1:{echo}"}],
            [{"name": "exiter", "config": {"in": "nowhere"}}]),
            handlers={"exiter": exiter})
        responses = await fetchMany(gw.httpsPort, ["/", "/", "/", "/"], pki=self.pki)
        self.assertEqual([r.status for r in responses], [200] * 4)
        self.assertEqual({r.json()["server_port"] for r in responses}, {echo})
        self.assertGreater(exiter.phases.count("balancer"), 4)  # one per try
        self.assertEqual(responses[0].json()["headers"]["host"], "backend")

    async def test_weights_share_the_load(self) -> None:
        one, two = await startEcho(self.addCleanup), await startEcho(self.addCleanup)
        gw = await self.gateway(document=self.document(
            [{"target": f"127.0.0.1:{one}", "weight": 300},
             {"target": f"127.0.0.1:{two}", "weight": 100}]))
        responses = await fetchMany(gw.httpsPort, ["/"] * 8, pki=self.pki)
        counts = Counter(r.json()["server_port"] for r in responses)
        self.assertEqual(counts, {one: 6, two: 2})

    async def test_all_targets_refusing_is_502(self) -> None:
        gw = await self.gateway(document=self.document(
            [{"target": f"127.0.0.1:{freePort()}"}]))
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 502)

    async def test_set_target_chooses(self) -> None:
        echo = await startEcho(self.addCleanup)

        class Chooser:
            def access(self, kong, conf):  # type: ignore[no-untyped-def]
                kong.service.set_target("127.0.0.1", echo)

        gw = await self.gateway(document={
            **service(f"http://127.0.0.1:{freePort()}", retries=0),
            "plugins": [{"name": "chooser"}]}, handlers={"chooser": Chooser()})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.json()["server_port"], echo)


class HTTPSServiceTests(GatewayTestCase):
    def tlsUpstream(self, requireClientCert: bool = False) -> int:
        server = self.pki.server.keyedChain()
        options = tssl.CertificateOptions(
            privateKey=server.key, certificate=server.chain[0],
            verify=requireClientCert, requireCertificate=requireClientCert,
            caCerts=[tssl.Certificate.loadPEM(self.pki.root.cert_pem.bytes()).original]
            if requireClientCert else None)
        port = reactor.listenSSL(0, echoSite(), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def document(self, url: str, **extra: Any) -> dict[str, Any]:
        doc = service(url, **extra)
        doc["ca_certificates"] = [{"id": "root", "cert": self.pki.caPEM(self.pki.root)}]
        client = self.pki.client
        doc["certificates"] = [{"id": "client", "cert": client.fullChainPEM,
                                "key": client.keyPEM.decode()}]
        return doc

    async def status(self, document: dict[str, Any]) -> int:
        gw = await self.gateway(document=document)
        return (await fetch(gw.httpsPort, "/", pki=self.pki)).status

    async def test_private_ca_verifies(self) -> None:
        port = self.tlsUpstream()
        self.assertEqual(await self.status(self.document(
            f"https://localhost:{port}", ca_certificates=["root"])), 200)

    async def test_unknown_ca_is_refused(self) -> None:
        port = self.tlsUpstream()
        self.assertEqual(await self.status(self.document(f"https://localhost:{port}")), 502)

    async def test_hostname_mismatch_is_refused(self) -> None:
        port = self.tlsUpstream()
        doc = self.document(f"https://127.0.0.2:{port}", ca_certificates=["root"])
        self.assertEqual(await self.status(doc), 502)

    async def test_tls_verify_off(self) -> None:
        port = self.tlsUpstream()
        self.assertEqual(await self.status(self.document(
            f"https://localhost:{port}", tls_verify=False)), 200)

    async def test_client_certificate_presented(self) -> None:
        port = self.tlsUpstream(requireClientCert=True)
        self.assertEqual(await self.status(self.document(
            f"https://localhost:{port}", ca_certificates=["root"])), 502)
        self.assertEqual(await self.status(self.document(
            f"https://localhost:{port}", ca_certificates=["root"],
            client_certificate={"id": "client"})), 200)

    async def test_unknown_certificate_reference_is_refused(self) -> None:
        from kongtls.config import ConfigError

        with self.assertRaises(ConfigError) as caught:
            await self.gateway(document=self.document(
                "https://localhost:1", client_certificate={"id": "nope"}))
        self.assertIn("client_certificate", str(caught.exception))
