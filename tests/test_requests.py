"""The PhaseTracker and the proxy: phase order, short-circuits, errors, scoping, PDK."""

from __future__ import annotations

import socket
from typing import Any

from kongtls.testing import fetch, fetchMany, inThread, routeTo, startEcho
from tests.plugins import Exiter, Probe, Raiser, Tagger
from tests.support import GatewayTestCase


def closedPort() -> int:
    """A loopback port nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


class PhaseOrderTests(GatewayTestCase):
    async def test_exit_in_access_skips_upstream_but_not_filters_and_log(self) -> None:
        exiter = Exiter()
        doc = routeTo(closedPort(), [{"name": "exiter", "config": {"status": 403}}])
        gw = await self.gateway(document=doc, handlers={"exiter": exiter})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 403)
        self.assertEqual(response.headers["x-exit"], "yes")
        self.assertEqual(response.headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(response.body, b'{"message":"stopped"}\n')
        self.assertEqual(exiter.phases, ["rewrite", "access", "header_filter:403",
                                         "body_filter:True", "log:403"])

    async def test_exit_in_rewrite_skips_access(self) -> None:
        exiter = Exiter()
        doc = routeTo(closedPort(), [{"name": "exiter", "config": {"in": "rewrite",
                                                                    "status": 429}}])
        gw = await self.gateway(document=doc, handlers={"exiter": exiter})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 429)
        self.assertEqual(exiter.phases[:2], ["rewrite", "header_filter:429"])

    async def test_full_order_when_proxied(self) -> None:
        exiter = Exiter()
        echo = await startEcho(self.addCleanup)
        gw = await self.gateway(document=routeTo(echo, [
            {"name": "exiter", "config": {"in": "nowhere"}}]), handlers={"exiter": exiter})
        response = await fetch(gw.httpsPort, "/x", pki=self.pki)
        self.assertEqual(response.status, 200)
        self.assertEqual(exiter.phases[:4], ["rewrite", "access", "balancer",
                                             "header_filter:200"])
        self.assertEqual(exiter.phases[-2:], ["body_filter:True", "log:200"])
        self.assertTrue(response.body.endswith(b"}\n\n"))  # body_filter appended "\n"
        self.assertNotIn("content-length", response.headers)


class ErrorTests(GatewayTestCase):
    async def raising(self, phase: str) -> tuple[Any, Probe, int]:
        probe = Probe()
        echo = await startEcho(self.addCleanup)
        gw = await self.gateway(document=routeTo(echo, [
            {"name": "raiser", "config": {"phase": phase}}, {"name": "probe"}]),
            handlers={"raiser": Raiser(), "probe": probe})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        return response, probe, gw.httpsPort

    async def check500(self, phase: str) -> None:
        response, probe, port = await self.raising(phase)
        self.assertEqual(response.status, 500)
        self.assertEqual(response.body, b'{"message":"An unexpected error occurred"}')
        self.assertEqual(probe.logs[0]["response"]["status"], 500)
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len(errors), 1)
        # the gateway keeps serving (the same plugin raises again, so 500 again)
        again = await fetch(port, "/", pki=self.pki)
        self.assertEqual(again.status, 500)
        self.flushLoggedErrors(RuntimeError)

    async def test_rewrite_raises(self) -> None:
        await self.check500("rewrite")

    async def test_access_raises(self) -> None:
        await self.check500("access")

    async def test_header_filter_raises(self) -> None:
        await self.check500("header_filter")

    async def test_log_raising_does_not_change_the_response(self) -> None:
        response, probe, port = await self.raising("log")
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_other_requests_unaffected(self) -> None:
        echo = await startEcho(self.addCleanup)
        doc = {"_format_version": "3.0", "services": [{
            "name": "echo", "url": f"http://127.0.0.1:{echo}", "routes": [
                {"name": "bad", "paths": ["/bad"],
                 "plugins": [{"name": "raiser", "config": {"phase": "access"}}]},
                {"name": "good", "paths": ["/good"]}]}]}
        gw = await self.gateway(document=doc, handlers={"raiser": Raiser()})
        results = await fetchMany(gw.httpsPort, ["/bad", "/good", "/bad", "/good"],
                                  pki=self.pki)
        self.assertEqual([r.status for r in results], [500, 200, 500, 200])
        self.flushLoggedErrors(RuntimeError)

    async def test_no_route_is_404_with_kongs_body(self) -> None:
        echo = await startEcho(self.addCleanup)
        doc = routeTo(echo)
        doc["services"][0]["routes"][0]["paths"] = ["/only"]
        gw = await self.gateway(document=doc)
        response = await fetch(gw.httpsPort, "/elsewhere", pki=self.pki)
        self.assertEqual(response.status, 404)
        self.assertEqual(response.body, b'{"message":"no Route matched with those values"}')

    async def test_refused_upstream_is_502_with_kongs_body(self) -> None:
        gw = await self.gateway(document=routeTo(closedPort()))
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 502)
        self.assertEqual(response.body, b'{"message":"An invalid response was received '
                                        b'from the upstream server"}')

    async def test_wrong_phase_pdk_call_is_a_500_with_kongs_text(self) -> None:
        from kongtls.phases import PhaseError

        class Wrong:
            def header_filter(self, kong, conf):  # type: ignore[no-untyped-def]
                kong.service.request.set_header("X", "y")

        gw = await self.gateway([{"name": "wrong"}], {"wrong": Wrong()})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 500)
        [error] = self.flushLoggedErrors(PhaseError)
        self.assertEqual(str(error.value), "function cannot be called in header_filter "
                         "phase (only in: rewrite, access, balancer)")


class ScopingTests(GatewayTestCase):
    """One instance per scope; route beats service beats global; rewrite is global."""

    async def test_most_specific_instance_wins(self) -> None:
        echo = await startEcho(self.addCleanup)
        doc = {"_format_version": "3.0",
               "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}",
                             "plugins": [{"name": "tagger", "config": {"tag": "service"}}],
                             "routes": [
                                 {"name": "r", "paths": ["/r"], "plugins": [
                                     {"name": "tagger", "config": {"tag": "route"}}]},
                                 {"name": "s", "paths": ["/s"]}]},
                            {"name": "other", "url": f"http://127.0.0.1:{echo}",
                             "routes": [{"name": "g", "paths": ["/g"]}]}],
               "plugins": [{"name": "tagger", "config": {"tag": "global"}}]}
        gw = await self.gateway(document=doc, handlers={"tagger": Tagger()})
        r, s, g = await fetchMany(gw.httpsPort, ["/r", "/s", "/g"], pki=self.pki)
        self.assertEqual([x.json()["headers"]["x-tags"] for x in (r, s, g)],
                         ["route", "service", "global"])

    async def test_rewrite_runs_global_plugins_only(self) -> None:
        exiterRoute, exiterGlobal = Exiter(), Exiter()
        echo = await startEcho(self.addCleanup)
        doc = {"_format_version": "3.0", "services": [{
            "name": "echo", "url": f"http://127.0.0.1:{echo}", "routes": [
                {"name": "r", "paths": ["/"], "plugins": [
                    {"name": "route-exiter", "config": {"in": "nowhere"}}]}]}],
            "plugins": [{"name": "global-exiter", "config": {"in": "nowhere"}}]}
        gw = await self.gateway(document=doc, handlers={
            "route-exiter": exiterRoute, "global-exiter": exiterGlobal})
        await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(exiterGlobal.phases[0], "rewrite")
        self.assertEqual(exiterRoute.phases[0], "access")

    async def test_disabled_plugin_does_not_run(self) -> None:
        exiter = Exiter()
        echo = await startEcho(self.addCleanup)
        gw = await self.gateway(document=routeTo(echo, [
            {"name": "exiter", "enabled": False}]), handlers={"exiter": exiter})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 200)
        self.assertEqual(exiter.phases, [])

    async def test_priority_orders_handlers(self) -> None:
        order: list[str] = []

        def plugin(name: str, priority: int) -> Any:
            class P:
                PRIORITY = priority

                def access(self, kong, conf):  # type: ignore[no-untyped-def]
                    order.append(name)
            return P()

        gw = await self.gateway([{"name": "low"}, {"name": "high"}, {"name": "mid"}],
                                {"low": plugin("low", 1), "high": plugin("high", 900),
                                 "mid": plugin("mid", 50)})
        await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(order, ["high", "mid", "low"])


class ProxyTests(GatewayTestCase):
    async def test_request_pdk_and_forwarded_headers(self) -> None:
        class Report:
            def access(self, kong, conf):  # type: ignore[no-untyped-def]
                r = kong.request
                kong.service.request.set_header("X-Seen", ",".join([
                    r.get_scheme(), r.get_host(), r.get_method(), r.get_path(),
                    r.get_header("x-one") or "-", str(kong.client.get_ip())]))
                kong.service.request.clear_header("X-Drop")

        echo = await startEcho(self.addCleanup)
        doc = routeTo(echo, [{"name": "report"}])
        doc["services"][0]["url"] = f"http://127.0.0.1:{echo}/base"
        doc["services"][0]["routes"][0]["paths"] = ["/api"]
        gw = await self.gateway(document=doc, handlers={"report": Report()})
        response = await fetch(gw.httpsPort, "/api/items?q=1", pki=self.pki,
                               headers={"X-One": "1", "X-Drop": "x",
                                        "Connection": "keep-alive, X-Hop", "X-Hop": "h"})
        seen = response.json()
        self.assertEqual(seen["uri"], "/base/items?q=1")
        headers = seen["headers"]
        self.assertEqual(headers["x-seen"], "https,localhost,GET,/api/items,1,127.0.0.1")
        self.assertNotIn("x-drop", headers)
        self.assertNotIn("x-hop", headers)
        self.assertEqual(headers["x-forwarded-proto"], "https")
        self.assertEqual(headers["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(headers["x-forwarded-host"], "localhost")
        self.assertEqual(headers["x-forwarded-path"], "/api/items")
        self.assertEqual(headers["x-real-ip"], "127.0.0.1")
        self.assertEqual(headers["host"], f"127.0.0.1:{echo}")

    async def test_preserve_host_sends_the_clients_host(self) -> None:
        echo = await startEcho(self.addCleanup)
        doc = routeTo(echo)
        doc["services"][0]["routes"][0]["preserve_host"] = True
        gw = await self.gateway(document=doc)
        for extra in ({}, {"Connection": "keep-alive, Host"}):  # Host is never hop-by-hop
            response = await fetch(gw.httpsPort, "/p", pki=self.pki, headers=extra)
            headers = response.json()["headers"]
            self.assertEqual(headers["host"], "localhost", extra)
            self.assertEqual(headers["x-forwarded-host"], "localhost", extra)

    async def test_post_body_is_proxied(self) -> None:
        from kongtls.testing import ClientConnection, clientContext

        gw = await self.gateway()
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        response = await inThread(conn.request, "/upload", "POST", None, b"x" * 100000)
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.json()["body_size"], 100000)

    async def test_plaintext_listener_proxies(self) -> None:
        gw = await self.gateway()
        response = await fetch(gw.httpPort, "/plain", tls=False)
        self.assertEqual(response.json()["headers"]["x-forwarded-proto"], "http")

    async def test_serializer_fields(self) -> None:
        probe = Probe()
        gw = await self.gateway([{"name": "probe"}], {"probe": probe})
        await fetch(gw.httpsPort, "/s?a=b", pki=self.pki,
                    headers={"Authorization": "secret"})
        entry = probe.logs[0]
        self.assertEqual(entry["request"]["method"], "GET")
        self.assertEqual(entry["request"]["uri"], "/s?a=b")
        self.assertEqual(entry["request"]["headers"]["authorization"], "REDACTED")
        self.assertEqual(entry["response"]["status"], 200)
        self.assertEqual(entry["client_ip"], "127.0.0.1")
        self.assertEqual(entry["route"]["name"], "echo")
        self.assertEqual(entry["service"]["name"], "echo")
        self.assertEqual(entry["request"]["tls"]["client_verify"], "NONE")
        self.assertEqual(entry["upstream_uri"], "/s?a=b")
        self.assertGreaterEqual(entry["latencies"]["proxy"], 0)


class MethodRouteTests(GatewayTestCase):
    async def test_methods_narrow_a_route(self) -> None:
        from kongtls.testing import ClientConnection, clientContext

        echo = await startEcho(self.addCleanup)
        doc = routeTo(echo)
        doc["services"][0]["routes"] = [
            {"name": "reads", "paths": ["/"], "methods": ["GET"]},
            {"name": "writes", "paths": ["/"], "methods": ["post"], "strip_path": False,
             "plugins": [{"name": "tagger", "config": {"tag": "writes"}}]}]
        gw = await self.gateway(document=doc, handlers={"tagger": Tagger()})
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        get = await inThread(conn.request, "/x")
        post = await inThread(conn.request, "/x", "POST", None, b"data")
        put = await inThread(conn.request, "/x", "PUT", None, b"data")
        self.assertEqual(get.status, 200)
        self.assertNotIn("x-tags", get.json()["headers"])
        self.assertEqual(post.json()["headers"]["x-tags"], "writes")
        self.assertEqual(put.status, 404)


class ResponsePhaseTests(GatewayTestCase):
    async def test_response_phase_sees_and_replaces_the_whole_body(self) -> None:
        seen: dict[str, Any] = {}

        class Rewriter:
            def response(self, kong, conf):  # type: ignore[no-untyped-def]
                body = kong.service.response.get_raw_body()
                seen["status"] = kong.service.response.get_status()
                seen["size"] = len(body)
                kong.response.set_raw_body(body.upper())
                kong.response.set_header("X-Rewritten", "yes")

            def header_filter(self, kong, conf):  # type: ignore[no-untyped-def]
                seen["header_filter"] = kong.response.get_status()

        gw = await self.gateway([{"name": "rewriter"}], {"rewriter": Rewriter()})
        response = await fetch(gw.httpsPort, "/quiet", pki=self.pki)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["x-rewritten"], "yes")
        self.assertIn(b'"PATH": "/QUIET"', response.body)
        self.assertEqual(seen["status"], 200)
        self.assertEqual(seen["size"], len(response.body))
        self.assertEqual(seen["header_filter"], 200)

    async def test_without_response_handlers_nothing_is_buffered(self) -> None:
        seen: list[Any] = []

        class Peek:
            def header_filter(self, kong, conf):  # type: ignore[no-untyped-def]
                seen.append(kong.service.response.get_status())

        gw = await self.gateway([{"name": "peek"}], {"peek": Peek()})
        response = await fetch(gw.httpsPort, "/", pki=self.pki)
        self.assertEqual(response.status, 200)
        self.assertEqual(seen, [200])
