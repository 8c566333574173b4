"""Session resumption on by default, and disable_session_reuse() defeating it, with
tickets and with the session-ID cache, in TLS 1.2 and 1.3 (001-tls.t and beyond)."""

from __future__ import annotations

import os
import tempfile

from kongtls.certificates import SessionPolicy
from kongtls.testing import fetch, sClient
from tests.plugins import Probe
from tests.support import GatewayTestCase

TICKETS = SessionPolicy(tickets=True, cacheSize=0)
CACHE_ONLY = SessionPolicy(tickets=False, cacheSize=1000)
BOTH = SessionPolicy(tickets=True, cacheSize=1000)


class PythonClientResumptionTests(GatewayTestCase):
    """Python's ``ssl`` offers the session of a first connection on a second one."""

    async def resumed(self, sessions: SessionPolicy, version: str, conf: dict,
                      withCert: bool = False) -> tuple[bool, dict]:
        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {**conf, "exit": True}}],
                                {"probe": probe}, sessions=sessions)
        cert = self.pki.client if withCert else None
        first = await fetch(gw.httpsPort, "/", pki=self.pki, tlsVersion=version,
                            clientCert=cert)
        self.assertFalse(first.sessionReused)
        self.assertIsNotNone(first.session)
        second = await fetch(gw.httpsPort, "/", pki=self.pki, tlsVersion=version,
                             clientCert=cert, session=first.session)
        self.assertEqual(second.status, 200)
        return second.sessionReused, second.json()

    async def test_tickets_resume_tls12(self) -> None:
        reused, _ = await self.resumed(TICKETS, "1.2", {})
        self.assertTrue(reused)

    async def test_tickets_resume_tls13(self) -> None:
        reused, _ = await self.resumed(TICKETS, "1.3", {})
        self.assertTrue(reused)

    async def test_cache_resumes_tls12(self) -> None:
        reused, _ = await self.resumed(CACHE_ONLY, "1.2", {})
        self.assertTrue(reused)

    async def test_cache_resumes_tls13(self) -> None:
        reused, _ = await self.resumed(CACHE_ONLY, "1.3", {})
        self.assertTrue(reused)

    async def test_disable_stops_tickets_tls12(self) -> None:
        reused, report = await self.resumed(TICKETS, "1.2", {"disable_reuse": True})
        self.assertFalse(reused)

    async def test_disable_stops_tickets_tls13(self) -> None:
        reused, _ = await self.resumed(TICKETS, "1.3", {"disable_reuse": True})
        self.assertFalse(reused)

    async def test_disable_stops_cache_tls12(self) -> None:
        reused, _ = await self.resumed(CACHE_ONLY, "1.2", {"disable_reuse": True})
        self.assertFalse(reused)

    async def test_disable_stops_cache_tls13(self) -> None:
        reused, _ = await self.resumed(CACHE_ONLY, "1.3", {"disable_reuse": True})
        self.assertFalse(reused)

    async def test_disable_stops_both_tls12(self) -> None:
        reused, _ = await self.resumed(BOTH, "1.2", {"disable_reuse": True})
        self.assertFalse(reused)

    async def test_disable_stops_both_tls13(self) -> None:
        reused, _ = await self.resumed(BOTH, "1.3", {"disable_reuse": True})
        self.assertFalse(reused)

    async def test_mtls_with_disable_sees_chain_every_time_tls13(self) -> None:
        reused, report = await self.resumed(
            BOTH, "1.3", {"request": True, "disable_reuse": True}, withCert=True)
        self.assertFalse(reused)
        self.assertEqual(report["chain"], self.pki.client.fullChainPEM)

    async def test_resumed_mtls_session_has_no_chain_tls12(self) -> None:
        """Why the function exists: a resumed handshake carries no chain."""
        reused, report = await self.resumed(TICKETS, "1.2", {"request": True},
                                            withCert=True)
        self.assertTrue(reused)
        self.assertIsNone(report["chain"])
        self.assertIsNone(report["err"])

    async def test_other_connections_keep_resumption(self) -> None:
        probe = Probe()
        gw = await self.gateway([{"name": "probe", "config": {"exit": True}}],
                                {"probe": probe}, sessions=TICKETS)
        first = await fetch(gw.httpsPort, "/", pki=self.pki, tlsVersion="1.3")
        second = await fetch(gw.httpsPort, "/", pki=self.pki, tlsVersion="1.3",
                             session=first.session)
        self.assertTrue(second.sessionReused)


class OpenSSLClientResumptionTests(GatewayTestCase):
    """``openssl s_client -sess_out`` then ``-sess_in``: "Reused" or "New"."""

    async def sessionLine(self, sessions: SessionPolicy, version: str, conf: dict) -> str:
        gw = await self.gateway([{"name": "probe", "config": conf}], {"probe": Probe()},
                                sessions=sessions)
        fd, path = tempfile.mkstemp(prefix="kongtls-sess-")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        flag = f"-tls{version.replace('.', '_')}"
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        first = await sClient(gw.httpsPort, flag, "-sess_out", path, "-ign_eof",
                              stdin=request)
        self.assertRegex(first.out, r"\nNew, TLSv1\.[23]")
        if os.path.getsize(path) == 0:
            return "not resumable: no session was written by -sess_out"
        second = await sClient(gw.httpsPort, flag, "-sess_in", path, "-ign_eof",
                               stdin=request)
        self.assertIn("200 OK", second.out)
        line = [ln for ln in second.out.splitlines()
                if ln.startswith(("New, ", "Reused, "))]
        return line[0]

    async def test_tickets_reused_tls12(self) -> None:
        self.assertTrue((await self.sessionLine(TICKETS, "1.2", {})).startswith("Reused"))

    async def test_tickets_reused_tls13(self) -> None:
        self.assertTrue((await self.sessionLine(TICKETS, "1.3", {})).startswith("Reused"))

    async def test_cache_reused_tls12(self) -> None:
        self.assertTrue((await self.sessionLine(CACHE_ONLY, "1.2", {})).startswith("Reused"))

    async def test_disable_tickets_tls12(self) -> None:
        line = await self.sessionLine(TICKETS, "1.2", {"disable_reuse": True})
        self.assertFalse(line.startswith("Reused"), line)

    async def test_disable_tickets_tls13(self) -> None:
        line = await self.sessionLine(TICKETS, "1.3", {"disable_reuse": True})
        self.assertFalse(line.startswith("Reused"), line)

    async def test_disable_cache_tls12(self) -> None:
        line = await self.sessionLine(CACHE_ONLY, "1.2", {"disable_reuse": True})
        self.assertFalse(line.startswith("Reused"), line)

    async def test_disable_cache_tls13(self) -> None:
        line = await self.sessionLine(CACHE_ONLY, "1.3", {"disable_reuse": True})
        self.assertFalse(line.startswith("Reused"), line)
