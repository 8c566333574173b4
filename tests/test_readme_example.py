"""The plugin and the plugin test shown in README.rst, kept running."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from kongtls.testing import TestPKI, fetch, routeTo, startEcho, startGateway


class MutualTLS:
    PRIORITY = 1100

    def certificate(self, kong, conf):  # type: ignore[no-untyped-def]
        res, err = kong.client.tls.request_client_certificate(conf.get("ca_certs"))
        if not res:
            kong.log.err("cannot request a certificate: ", err)
        kong.client.tls.disable_session_reuse()

    async def access(self, kong, conf):  # type: ignore[no-untyped-def]
        chain, err = kong.client.tls.get_full_client_certificate_chain()
        if chain is None:
            return kong.response.exit(401, {"message": "certificate required"})
        kong.service.request.set_header("X-Client-Chain", chain.replace("\n", ""))


class MutualTLSTests(TestCase):
    async def test_chain_reaches_the_upstream(self) -> None:
        pki = TestPKI()                      # root, intermediate, server and client
        self.addCleanup(pki.close)
        echo = await startEcho(self.addCleanup)        # a real upstream
        gw = await startGateway(self.addCleanup,
                                routeTo(echo, [{"name": "mtls"}]),
                                plugins={"mtls": MutualTLS},
                                defaultCertificate=pki.server)
        refused = await fetch(gw.httpsPort, "/", pki=pki, tlsVersion="1.2")
        self.assertEqual(refused.status, 401)
        ok = await fetch(gw.httpsPort, "/", pki=pki, clientCert=pki.client,
                         tlsVersion="1.3", alpn=["http/1.1"])
        self.assertIn("BEGIN CERTIFICATE", ok.json()["headers"]["x-client-chain"])
        again = await fetch(gw.httpsPort, "/", pki=pki, clientCert=pki.client,
                            tlsVersion="1.3", session=ok)
        self.assertFalse(again.sessionReused)
