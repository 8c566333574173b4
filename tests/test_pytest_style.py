"""kongtls.testing under pytest-twisted (plain test functions; trial does not collect
these, the rest of the suite runs under both)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from kongtls.testing import TestPKI, fetch, routeTo, startEcho, startGateway
from tests.plugins import Probe


class Cleanups:
    """Collects cleanups like TestCase.addCleanup; the fixture runs them, newest first."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> None:
        self.calls.append((f, args))


@pytest.fixture
def cleanups() -> Iterator[Cleanups]:
    collected = Cleanups()
    yield collected
    for f, args in reversed(collected.calls):
        result = f(*args)
        if hasattr(result, "addCallback"):
            pytest_twisted.blockon(result)


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
