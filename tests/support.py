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


def freePort() -> int:
    """A loopback port that was free a moment ago (for child processes to bind)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def twistdExecutable() -> str:
    """The twistd next to this Python (the installed copy under test)."""
    import os
    import shutil
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    found = beside if os.path.exists(beside) else shutil.which("twistd")
    assert found, "twistd not found"
    return found


class ChildProcess:
    """A child process (twistd) the reactor watches; its output is kept."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.protocol import ProcessProtocol

        self.out = bytearray()
        self.ended: Deferred[int] = Deferred()
        child = self

        class Watch(ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                child.out += data

            def errReceived(self, data: bytes) -> None:
                child.out += data

            def processEnded(self, reason: Any) -> None:
                child.ended.callback(reason.value.exitCode)

        self.transport = reactor.spawnProcess(Watch(), argv[0], argv, env=env, path=cwd)

    @property
    def running(self) -> bool:
        return not self.ended.called

    async def stop(self) -> None:
        if self.running:
            self.transport.signalProcess("TERM")
            await self.ended

    async def waitForPort(self, port: int, timeout: float = 15.0) -> None:
        """Until something accepts on 127.0.0.1:port, or the child ends (then raise)."""
        import time

        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol
        from twisted.internet.task import deferLater

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"child ended early:\n{self.out.decode()}")
            try:
                proto = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
            except Exception:
                await deferLater(reactor, 0.1, lambda: None)
            else:
                proto.transport.loseConnection()
                return
        raise AssertionError(f"port {port} never opened:\n{self.out.decode()}")
