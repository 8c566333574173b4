"""kongtls.testing under pytest-twisted (plain test functions; trial does not collect
these, the rest of the suite runs under both)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted

from kongtls.testing import Cleanups, TestPKI, fetch, routeTo, startEcho, startGateway
from tests.plugins import Probe


@pytest.fixture
def cleanups() -> Iterator[Cleanups]:
    collected = Cleanups()
    yield collected
    pytest_twisted.blockon(collected.run())


@pytest.fixture(scope="module")
def pki() -> Iterator[TestPKI]:
    made = TestPKI()
    yield made
    made.close()


@pytest_twisted.ensureDeferred
async def test_probe_sees_client_chain(cleanups: Cleanups, pki: TestPKI) -> None:
    probe = Probe()
    echo = await startEcho(cleanups)
    gw = await startGateway(cleanups, routeTo(echo, [
        {"name": "probe", "config": {"request": True, "exit": True}}]),
        plugins={"probe": probe}, defaultCertificate=pki.server)
    response = await fetch(gw.httpsPort, "/", pki=pki, clientCert=pki.client)
    assert response.status == 200
    assert response.json()["chain"] == pki.client.fullChainPEM
    assert probe.logs[0]["request"]["tls"]["client_verify"] == \
        "FAILED:unable to get local issuer certificate"


@pytest_twisted.ensureDeferred
async def test_readme_pytest_example(cleanups: Cleanups) -> None:
    from tests.test_readme_example import MutualTLS

    pki = TestPKI()
    cleanups(pki.close)
    echo = await startEcho(cleanups)
    gw = await startGateway(cleanups, routeTo(echo, [{"name": "mtls"}]),
                            plugins={"mtls": MutualTLS}, defaultCertificate=pki.server)
    assert (await fetch(gw.httpsPort, "/", pki=pki)).status == 401
