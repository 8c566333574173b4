"""Shared test set-up: one test PKI per run and a gateway per test, over real TLS."""

from __future__ import annotations

import atexit
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.trial.unittest import TestCase

from kongtls.testing import RunningGateway, TestPKI, routeTo, startEcho, startGateway

_shared: list[TestPKI] = []


def sharedPKI() -> TestPKI:
    """Made once per test run (trial has no setUpClass), removed at exit."""
    if not _shared:
        _shared.append(TestPKI())
        atexit.register(_shared[0].close)
    return _shared[0]


class GatewayTestCase(TestCase):
    """Gives each test a real echo upstream and a gateway using the test PKI's server
    certificate as its default certificate."""

    @property
    def pki(self) -> TestPKI:
        return sharedPKI()

    async def gateway(self, plugins: Sequence[Mapping[str, Any]] = (),
                      handlers: Mapping[str, Any] | None = None,
                      document: dict[str, Any] | None = None,
                      **kwargs: Any) -> RunningGateway:
        if document is None:
            document = routeTo(await startEcho(self.addCleanup), plugins)
        return await startGateway(self.addCleanup, document, handlers,
                                  defaultCertificate=self.pki.server, **kwargs)
