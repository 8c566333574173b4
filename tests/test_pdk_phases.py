"""Every PDK function beside kong.client.tls, called in every phase: allowed where
Kong's phase sets allow it, else PhaseError with Kong's text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kongtls import phases as P
from kongtls.phases import Phase, PhaseSet
from kongtls.testing import fetch
from tests.support import GatewayTestCase

RUN_PHASES = (Phase.client_hello, Phase.certificate, Phase.rewrite, Phase.access,
              Phase.balancer, Phase.header_filter, Phase.body_filter, Phase.log)

#: name -> (call, the phases Kong allows it in)
CALLS: dict[str, tuple[Callable[[Any], Any], PhaseSet]] = {
    "client.get_ip": (lambda k: k.client.get_ip(), P.NOT_INIT_WORKER),
    "request.get_scheme": (lambda k: k.request.get_scheme(), P.REQUEST),
    "request.get_host": (lambda k: k.request.get_host(), P.REQUEST),
    "request.get_method": (lambda k: k.request.get_method(), P.REQUEST),
    "request.get_path": (lambda k: k.request.get_path(), P.REQUEST),
    "request.get_header": (lambda k: k.request.get_header("host"), P.REQUEST),
    "request.get_headers": (lambda k: k.request.get_headers(), P.REQUEST),
    "response.set_header": (lambda k: k.response.set_header("X-P", "1"),
                            P.REWRITE_ACCESS_HEADER),
    "response.get_status": (lambda k: k.response.get_status(), P.HEADER_BODY_LOG),
    "service.request.set_header": (lambda k: k.service.request.set_header("X-S", "1"),
                                   P.ACCESS_REWRITE_BALANCER),
    "service.request.clear_header": (lambda k: k.service.request.clear_header("X-S"),
                                     P.ACCESS_AND_REWRITE),
    "log.serialize": (lambda k: k.log.serialize(), P.LOG_ONLY),
    "log.info": (lambda k: k.log.info("hello"), PhaseSet(Phase)),
    "ctx.shared": (lambda k: k.ctx.shared.setdefault("n", 0), PhaseSet(Phase)),
}


class EveryPhase:
    PRIORITY = 1

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], str] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in Phase.__members__:
            raise AttributeError(name)
        phase = Phase[name]

        def handler(kong: Any, conf: Any) -> None:
            for label, (call, _) in CALLS.items():
                try:
                    call(kong)
                except Exception as e:
                    self.outcomes[(phase.name or "", label)] = f"{type(e).__name__}: {e}"
                else:
                    self.outcomes[(phase.name or "", label)] = "ok"
        return handler


class PDKPhaseTests(GatewayTestCase):
    async def test_every_function_in_every_phase(self) -> None:
        plugin = EveryPhase()
        gw = await self.gateway([{"name": "every"}], {"every": plugin})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 200)
        for phase in RUN_PHASES:
            for label, (_, allowed) in CALLS.items():
                got = plugin.outcomes[(phase.name or "", label)]
                if phase in allowed:
                    self.assertEqual(got, "ok", (phase.name, label))
                else:
                    self.assertEqual(got, f"PhaseError: function cannot be called in "
                                          f"{phase.name} phase (only in: {allowed.names})",
                                     (phase.name, label))

    def test_phase_set_names_are_in_bit_order(self) -> None:
        self.assertEqual(P.REQUEST.names, "rewrite, access, balancer, response, "
                         "header_filter, body_filter, log, error, admin_api")
        self.assertEqual(P.REWRITE_ACCESS_HEADER.names,
                         "rewrite, access, response, header_filter, error, admin_api")
