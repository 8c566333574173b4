"""kong.client.tls over real handshakes: Kong's t/01-pdk/14-client-tls tests and
lua-kong-nginx-module's t/001-tls.t chain tests, in TLS 1.2 and 1.3."""

from __future__ import annotations

import re

from kongtls.client_tls import checkClientVerify
from kongtls.phases import PhaseError
from kongtls.testing import fetch, sClient
from tests.plugins import PhaseRecorder, Probe
from tests.support import GatewayTestCase

CHAIN_TEXT = "rewrite, access, balancer, response, log"
VERIFY_TEXT = "rewrite, access, balancer, response"


def phaseError(current: str, allowed: str) -> str:
    return (f"PhaseError: function cannot be called in {current} phase "
            f"(only in: {allowed})")


class PhaseChecksTests(GatewayTestCase):
    """00-phase_checks.t: every function in every phase, allowed or Kong's error."""

    async def test_every_function_in_every_phase(self) -> None:
        recorder = PhaseRecorder()
        gw = await self.gateway([{"name": "recorder"}], {"recorder": recorder})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 200)
        got = recorder.outcomes
        allowed = {
            "request_client_certificate": {"certificate"},
            "disable_session_reuse": {"certificate"},
            "get_full_client_certificate_chain": {"rewrite", "access", "balancer", "log"},
            "set_client_verify": {"rewrite", "access", "balancer"},
            "disable_http2_alpn": {"client_hello"},
        }
        allowedText = {
            "request_client_certificate": "certificate",
            "disable_session_reuse": "certificate",
            "get_full_client_certificate_chain": CHAIN_TEXT,
            "set_client_verify": VERIFY_TEXT,
            "disable_http2_alpn": "client_hello",
        }
        phases = ["client_hello", "certificate", "rewrite", "access", "balancer",
                  "header_filter", "body_filter", "log"]
        for phase in phases:
            for name in PhaseRecorder.CALLS:
                expected = "ok" if phase in allowed[name] else phaseError(
                    phase, allowedText[name])
                self.assertEqual(got[(phase, name)], expected, (phase, name))

    def test_header_filter_error_text_is_kongs(self) -> None:
        from kongtls.client_tls import CHAIN_PHASES
        from kongtls.phases import Phase

        with self.assertRaises(PhaseError) as caught:
            CHAIN_PHASES.check(Phase.header_filter)
        self.assertEqual(str(caught.exception),
                         "function cannot be called in header_filter phase "
                         "(only in: rewrite, access, balancer, response, log)")


class SetClientVerifyValueTests(GatewayTestCase):
    def test_accepted_values(self) -> None:
        for value in ("SUCCESS", "NONE", "FAILED:something"):
            self.assertEqual(checkClientVerify(value), value)

    def test_unknown_value_raises_kongs_text(self) -> None:
        with self.assertRaises(ValueError) as caught:
            checkClientVerify("BAD")
        self.assertEqual(str(caught.exception),
                         'unknown client verify value: BAD accepted values are: '
                         '"SUCCESS", "NONE" or "FAILED:<reason>"')

    def test_non_string_raises_type_error(self) -> None:
        with self.assertRaises(TypeError):
            checkClientVerify(1)  # type: ignore[arg-type]


class RequestClientCertificateTests(GatewayTestCase):
    """01-request_client_certificate.t, in TLS 1.2 and 1.3."""

    async def report(self, conf: dict, version: str, withCert: bool = True) -> dict:
        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {**conf, "exit": True}}],
                                {"probe": probe})
        response = await fetch(gw.httpsPort, "/", pki=self.pki, tlsVersion=version,
                               clientCert=self.pki.client if withCert else None)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.tlsVersion, f"TLSv{version}")
        report = response.json()
        report["log"] = probe.logs[0]
        return report

    async def check_not_requested(self, version: str) -> None:
        report = await self.report({}, version)
        self.assertIsNone(report["chain"])
        self.assertIsNone(report["err"])
        self.assertEqual(report["log"]["request"]["tls"]["client_verify"], "NONE")

    async def check_requested_without_ca(self, version: str) -> None:
        report = await self.report({"request": True}, version)
        self.assertEqual(report["chain"], self.pki.client.fullChainPEM)
        self.assertEqual(report["log"]["request"]["tls"]["client_verify"],
                         "FAILED:unable to get local issuer certificate")

    async def check_requested_with_ca(self, version: str) -> None:
        report = await self.report({"request": True,
                                    "ca_certs": [self.pki.caPEM(self.pki.root)]}, version)
        self.assertEqual(report["chain"], self.pki.client.fullChainPEM)
        self.assertEqual(report["log"]["request"]["tls"]["client_verify"], "SUCCESS")

    async def check_wrong_ca(self, version: str) -> None:
        report = await self.report({"request": True,
                                    "ca_certs": [self.pki.caPEM(self.pki.otherCA)]}, version)
        self.assertEqual(report["chain"], self.pki.client.fullChainPEM)
        self.assertTrue(report["log"]["request"]["tls"]["client_verify"].startswith(
            "FAILED:"))

    async def check_ca_but_no_client_cert(self, version: str) -> None:
        report = await self.report({"request": True,
                                    "ca_certs": [self.pki.caPEM(self.pki.root)]}, version,
                                   withCert=False)
        self.assertIsNone(report["chain"])
        self.assertIsNone(report["err"])
        self.assertEqual(report["log"]["request"]["tls"]["client_verify"], "NONE")

    async def test_not_requested_tls12(self) -> None:
        await self.check_not_requested("1.2")

    async def test_not_requested_tls13(self) -> None:
        await self.check_not_requested("1.3")

    async def test_requested_without_ca_tls12(self) -> None:
        await self.check_requested_without_ca("1.2")

    async def test_requested_without_ca_tls13(self) -> None:
        await self.check_requested_without_ca("1.3")

    async def test_requested_with_ca_tls12(self) -> None:
        await self.check_requested_with_ca("1.2")

    async def test_requested_with_ca_tls13(self) -> None:
        await self.check_requested_with_ca("1.3")

    async def test_requested_with_unrelated_ca_tls13(self) -> None:
        await self.check_wrong_ca("1.3")

    async def test_ca_given_client_sends_none_tls12(self) -> None:
        await self.check_ca_but_no_client_cert("1.2")

    async def test_ca_given_client_sends_none_tls13(self) -> None:
        await self.check_ca_but_no_client_cert("1.3")

    async def test_set_client_verify_shows_in_log(self) -> None:
        """tcp-log spec: set_client_verify("SUCCESS") in access reaches the serializer."""
        report = await self.report({"verify": "SUCCESS"}, "1.3", withCert=False)
        tls = report["log"]["request"]["tls"]
        self.assertEqual(tls["client_verify"], "SUCCESS")
        self.assertEqual(tls["version"], "TLSv1.3")
        self.assertTrue(tls["cipher"])


class CANamesTests(GatewayTestCase):
    """What ``openssl s_client`` shows as acceptable client certificate CA names."""

    async def names(self, conf: dict, version: str) -> str:
        gw = await self.gateway([{"name": "probe", "config": conf}], {"probe": Probe()})
        result = await sClient(gw.httpsPort, f"-tls{version.replace('.', '_')}")
        self.assertIn("Verify return code", result.out)
        return result.out

    async def check_in_order(self, version: str) -> None:
        first, second = self.pki.root, self.pki.otherCA
        out = await self.names({"request": True,
                                "ca_certs": [self.pki.caPEM(second), self.pki.caPEM(first)]},
                               version)
        section = out.split("Acceptable client certificate CA names", 1)[1]
        section = section.split("---", 1)[0]
        names = re.findall(r"O\s*=\s*(kongtls [a-z]+ root)", section)
        self.assertEqual(names, ["kongtls other root", "kongtls test root"])

    async def test_ca_names_in_order_tls12(self) -> None:
        await self.check_in_order("1.2")

    async def test_ca_names_in_order_tls13(self) -> None:
        await self.check_in_order("1.3")

    async def test_no_ca_names_without_list(self) -> None:
        out = await self.names({"request": True}, "1.3")
        self.assertIn("No client certificate CA names sent", out)

    async def test_ca_names_do_not_leak_to_other_connections(self) -> None:
        gw = await self.gateway(
            [{"name": "probe", "config": {"request": True,
                                          "ca_certs": [self.pki.caPEM(self.pki.root)]}}],
            {"probe": Probe()})
        await sClient(gw.httpsPort, "-tls1_3")
        # The context's list is restored once sent: a plain openssl client of a
        # different handshake sees the same (per-connection) list again, not a stale one.
        again = await sClient(gw.httpsPort, "-tls1_2")
        self.assertEqual(again.out.count("O = kongtls test root") >= 1, True)


class ChainTests(GatewayTestCase):
    """001-tls.t: the chain is leaf then intermediate PEM; plaintext gives an error."""

    async def test_chain_is_leaf_then_intermediate(self) -> None:
        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {"request": True,
                                                              "exit": True}}],
                                {"probe": probe})
        report = (await fetch(gw.httpsPort, "/", pki=self.pki,
                              clientCert=self.pki.client)).json()
        blocks = re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n",
                            report["chain"], re.S)
        self.assertEqual(len(blocks), 2)
        self.assertEqual(blocks[0], self.pki.client.chainPEM[0].decode())
        self.assertEqual(blocks[1], self.pki.client.chainPEM[1].decode())
        self.assertTrue(report["chain"].endswith("-----END CERTIFICATE-----\n"))
        for line in report["chain"].splitlines():
            self.assertLessEqual(len(line), 64)

    async def test_chain_with_openssl_client_sending_chain(self) -> None:
        gw = await self.gateway([{"name": "probe", "config": {"request": True}}],
                                {"probe": Probe()})
        result = await sClient(gw.httpsPort, "-cert", self.pki.client.certFile,
                               "-key", self.pki.client.keyFile, "-tls1_2", "-ign_eof",
                               stdin=b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        self.assertRegex(result.out, r"HTTP/1\.[01] 200 OK")

    async def test_plaintext_connection_errors(self) -> None:
        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {"exit": True}}],
                                {"probe": probe})
        report = (await fetch(gw.httpPort, "/", tls=False)).json()
        self.assertIsNone(report["chain"])
        self.assertEqual(report["err"], "connection is not TLS")
        self.assertNotIn("tls", probe.logs[0]["request"])
