"""kongtls against nginx as the same mutual-TLS reverse proxy: requests/s, latency, bulk
transfers and memory per idle connection, in the same run.

Both proxies run as subprocesses pinned to core 0, one process each (nginx: one worker),
with the same ECDSA P-256 server certificate, asking every client for a certificate
without requiring one (kongtls: the bundled ``client-certificate`` plugin, global, with
``disable_session_reuse``; nginx: ``ssl_verify_client optional_no_ca``), no session
tickets, and the same upstream on core 1 beside the load: an nginx (one worker) that
serves a small file and a 1 GiB (sparse) file from a temp dir and hands ``POST /upload``
(unbuffered) to a sink in this script that reads the whole body before it answers 200.
nginx proxies with ``proxy_http_version 1.1``, ``keepalive 32`` (kongtls's pool keeps 32
idle upstream connections), ``proxy_request_buffering off`` and, like kongtls's 8-chunk
read-ahead, ``proxy_buffering on`` with ``proxy_buffers 8 64k`` and no temp file.

1. **requests/s**: ``wrk`` (one thread, ``--connections`` keep-alive connections, TLS 1.3,
   presenting a client certificate through a small ``LD_PRELOAD`` shim, compiled here with
   ``gcc``, that loads one into wrk's ``SSL_CTX``) GETs the small file as fast as it can;
   then, at a fixed rate of half kongtls's median maximum, wrk paced by a Lua ``delay()``
   schedule measures the latency percentiles (from the write of each request; the first
   second is a warm-up: no request is sent before it ends).
2. **bulk**: ``curl`` (HTTP/1.1, TLS 1.3, client certificate) downloads the 1 GiB file
   (read once beforehand, so that it is in the page cache for every round) through the
   proxy, then POSTs 1 GiB through it to the sink. MB/s is 10^6 bytes / s of
   curl's total time; CPU is the proxy's utime + stime per 10^9 bytes; the proxy's peak
   RSS is its VmHWM (reset through ``/proc/PID/clear_refs`` before each transfer).
3. **idle connections**: a client process on core 1 opens ``--idle-connections`` TLS 1.3
   connections with a client certificate (32 handshakes at a time), sends nothing and
   keeps them open; once the proxy's CPU is quiet its RSS growth over the number open is
   the memory per idle connection. Both proxies are restarted before each such round.

Phases 1 and 2 run ``--rounds`` rounds, phase 3 ``--idle-rounds``, the proxies' order
alternating; the report gives the medians and the ratios kongtls / nginx of the medians.
With ``--profile``, py-spy samples kongtls under the requests/s load, a download and an
upload, and the top frames are printed (raw samples in the log directory).

    /tmp/venv/bin/python bench/proxy_bench.py [--rounds 3] [--connections 32] [--profile]

Needs nginx, wrk, curl, gcc and libssl-dev (``apt-get install nginx wrk curl gcc
libssl-dev``). Results: bench/results/proxy_bench.json; logs: bench/results/proxy_bench-logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BIN_DIR,
    CLIENT_CORE,
    NGINX,
    NGINX_MAIN,
    NGINX_TEMP_PATHS,
    NGINX_TLS,
    RESULTS_DIR,
    SERVER_CORE,
    Server,
    checkMachine,
    cleanUp,
    clientContext,
    environment,
    fmt,
    freePort,
    kongtlsServer,
    logProblems,
    median,
    nginxServer,
    nofile,
    now,
    pinned,
    ratio,
    run,
    stopOnTerm,
    writeReport,
)

from kongtls.testing import TestPKI

RESULTS_FILE = RESULTS_DIR / "proxy_bench.json"
LOG_DIR = RESULTS_DIR / "proxy_bench-logs"
SMALL_BODY = 512  # bytes of the small GET's response body
MiB = 1 << 20
PROXIES = ("kongtls", "nginx")


# -- processes ------------------------------------------------------------------------


UPSTREAM_CONF = NGINX_MAIN + """\
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
""" + NGINX_TEMP_PATHS + """\
    upstream sink {{ server 127.0.0.1:{sink}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location = /upload {{
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://sink;
        }}
    }}
}}
"""

PROXY_CONF = NGINX_MAIN + """\
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
""" + NGINX_TEMP_PATHS + """\
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
""" + NGINX_TLS + """\
        client_max_body_size 0;
        location = /bench-cert-check {{
            if ($ssl_protocol != "TLSv1.3") {{ return 426; }}
            if ($ssl_client_verify = NONE) {{ return 403; }}
            return 204;
        }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Path $request_uri;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_request_buffering off;
            # Like kongtls: read ahead of the client by at most 8 x 64 KiB, in memory.
            proxy_buffering on;
            proxy_buffer_size 16k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def nginxInstance(name: str, label: str, template: str, work: Path, core: int,
                  binary: Path, **values: Any) -> Server:
    files = nofile()
    return nginxServer(name, label, template, work, LOG_DIR, core, binary,
                       limits=f"worker_rlimit_nofile {files};\n",
                       connections=max(1024, files - 200), listen=" backlog=4096", **values)


def kongtlsProxy(pki: TestPKI, work: Path, upstreamPort: int) -> Server:
    document = {
        "_format_version": "3.0",
        "services": [{"name": "upstream", "url": f"http://127.0.0.1:{upstreamPort}",
                      "routes": [{"name": "all", "paths": ["/"]}]}],
        "plugins": [{"name": "client-certificate",
                     "config": {"disable_session_reuse": True}}],
    }
    return kongtlsServer(pki, work, LOG_DIR, document)


def bareProxy(pki: TestPKI, work: Path, upstreamPort: int) -> Server:
    """The ceiling for requests/s on Twisted: bench/bare_tls_proxy.py."""
    port = freePort()
    argv = [sys.executable, str(Path(__file__).resolve().parent / "bare_tls_proxy.py"),
            "--port", str(port), "--cert", pki.server.certFile, "--key", pki.server.keyFile,
            "--upstream", str(upstreamPort)]
    return Server("bare", "bare Twisted proxy", argv, port, LOG_DIR, cwd=str(work))


def sinkServer(work: Path) -> Server:
    port = freePort()
    argv = [sys.executable, str(Path(__file__).resolve()), "--sink", str(port)]
    return Server("sink", "upload sink", argv, port, LOG_DIR, cwd=str(work), core=CLIENT_CORE)


# -- the upload sink (runs as its own process: proxy_bench.py --sink PORT) -------------


class Sink(asyncio.BufferedProtocol):
    """HTTP/1.1 with Content-Length bodies: reads the whole body, then answers 200."""

    def __init__(self) -> None:
        self.buffer = bytearray(MiB)
        self.view = memoryview(self.buffer)
        self.head = bytearray()
        self.remaining: int | None = None  # body bytes still to come; None: in headers
        self.total = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.remaining is not None:
            self.remaining -= nbytes
            self._maybeDone()
            return
        self.head += self.view[:nbytes]
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > 65536:
                self._answer(431, b"headers too long\n", close=True)
            return
        lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
        extra = len(self.head) - end - 4
        self.head.clear()
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (line.partition(":") for line in lines[1:])}
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._answer(501, b"chunked request bodies are not supported\n", close=True)
            return
        self.total = int(fields.get("content-length", "0"))
        self.remaining = self.total - extra
        self._maybeDone()

    def _maybeDone(self) -> None:
        if self.remaining is not None and self.remaining <= 0:
            self.remaining = None
            self._answer(200, f"received {self.total} bytes\n".encode())

    def _answer(self, status: int, body: bytes, close: bool = False) -> None:
        assert self.transport is not None
        reason = {200: "OK"}.get(status, "Error")
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        if close:
            self.transport.close()


def runSink(port: int) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Sink, "127.0.0.1", port, backlog=1024)
        print(f"upload sink listening on 127.0.0.1:{port}", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


# -- the idle-connection client (proxy_bench.py --idle-client ...) ---------------------


def runIdleClient(port: int, count: int, certFile: str, keyFile: str,
                  concurrency: int, limit: float) -> None:
    """Open C{count} connections; report; answer 'alive' with how many are still open."""
    ctx = clientContext(certFile, keyFile, ssl.TLSVersion.TLSv1_3)

    async def main() -> None:
        gate = asyncio.Semaphore(concurrency)
        streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        errors: dict[str, int] = {}
        deadline = time.monotonic() + limit

        async def one() -> None:
            async with gate:
                if time.monotonic() > deadline:
                    errors["time limit"] = errors.get("time limit", 0) + 1
                    return
                try:
                    streams.append(await asyncio.wait_for(asyncio.open_connection(
                        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 30))
                except (TimeoutError, OSError, ssl.SSLError) as e:
                    kind = type(e).__name__
                    errors[kind] = errors.get(kind, 0) + 1

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.monotonic() - t0
        print(json.dumps({"opened": len(streams), "errors": errors, "seconds": elapsed}),
              flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if line.strip() == "alive":
                alive = sum(1 for reader, _ in streams if not reader.at_eof())
                print(json.dumps({"alive": alive}), flush=True)
            else:
                break
        sys.stdout.flush()
        os._exit(0)  # the kernel closes the sockets at once

    asyncio.run(main())


# -- load tools -----------------------------------------------------------------------


SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/ssl.h>

/* wrk makes one SSL_CTX: give it a client certificate and TLS 1.3 only. */
SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
    static SSL_CTX *(*real)(const SSL_METHOD *);
    if (real == NULL)
        real = (SSL_CTX *(*)(const SSL_METHOD *))dlsym(RTLD_NEXT, "SSL_CTX_new");
    SSL_CTX *ctx = real(method);
    if (ctx == NULL)
        return ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    const char *cert = getenv("BENCH_CLIENT_CERT"), *key = getenv("BENCH_CLIENT_KEY");
    if (cert && key && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
                        || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "client-certificate shim: cannot load %s and %s\n", cert, key);
        exit(3);
    }
    return ctx;
}
"""

WRK_LUA = r"""
-- Fixed rate when BENCH_RATE is set: one schedule for the thread, each request takes the
-- next slot (connections are many more than requests in flight); nothing before the
-- warm-up ends. Always: the results as one JSON line.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local warmup = tonumber(os.getenv("BENCH_WARMUP_MS") or "0")
if rate > 0 then
  local interval = 1000 / rate
  local slot = nil
  function delay()
    local t = now_ms()
    if slot == nil then slot = t + warmup else slot = slot + interval end
    local wait = slot - t
    if wait < 0 then return 0 end
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""


@dataclass
class Tools:
    wrk: str
    curl: str
    shim: str | None  # the LD_PRELOAD library, or None: wrk presents no certificate
    lua: str
    clientCert: str
    clientKey: str
    bigFile: str

    def wrkEnv(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, **extra)
        if self.shim is not None:
            env.update(LD_PRELOAD=self.shim, BENCH_CLIENT_CERT=self.clientCert,
                       BENCH_CLIENT_KEY=self.clientKey)
        return env


def buildShim(work: Path) -> tuple[str | None, str]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None, "no C compiler: wrk presents no client certificate"
    source = work / "client_cert_shim.c"
    source.write_text(SHIM_C)
    library = work / "client_cert_shim.so"
    built = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(library), str(source),
                            "-ldl"], capture_output=True, text=True)
    if built.returncode != 0:
        return None, (f"the client-certificate shim did not build (libssl-dev?): "
                      f"{built.stderr.strip()[:300]}; wrk presents no client certificate")
    return str(library), ""


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # ms
    clientCPU: float = 0.0
    raw: str = ""

    @property
    def perSecond(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errorCount(self) -> int:
        return sum(self.errors.values())


def runWrk(tools: Tools, port: int, path: str, connections: int, seconds: float,
           rate: float = 0.0, warmup: float = 0.0) -> WrkResult:
    argv = pinned(CLIENT_CORE) + [tools.wrk, "-t1", f"-c{connections}",
                                  f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                                  "-s", tools.lua, f"https://127.0.0.1:{port}{path}"]
    env = tools.wrkEnv(BENCH_RATE=str(rate), BENCH_WARMUP_MS=str(int(warmup * 1000)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, env=env,
                          timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = WrkResult(raw=done.stdout + done.stderr)
    result.clientCPU = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {done.returncode}):\n{result.raw}")
    data = json.loads(line[6:])
    result.requests = data["requests"]
    # The warm-up sends nothing: the rate is over the time after it.
    result.seconds = data["duration_us"] / 1e6 - warmup
    result.errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout")
                     if data[k]}
    result.latency = {k[:-3]: data[k] / 1000 for k in
                      ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us")}
    return result


def checkClientCertificate(tools: Tools, nginxProxy: Server) -> str:
    """Does wrk present the client certificate (and speak TLS 1.3)? nginx's answer tells."""
    if tools.shim is None:
        return "no shim"
    check = runWrk(tools, nginxProxy.port, "/bench-cert-check", 1, 1)
    if check.requests and not check.errors:
        return "yes"
    return f"no: {check.errors or 'no requests'}"


# -- measurements ---------------------------------------------------------------------


@dataclass
class Busy:
    """CPU of the proxy and of everything on the load core, over one measurement."""

    proxy: float = 0.0
    load: float = 0.0  # the client tool plus the upstream (nginx and the sink)


def rpsSample(proxy: Server, upstreams: Sequence[Server], tools: Tools,
              connections: int, seconds: float, rate: float = 0.0,
              warmup: float = 0.0) -> tuple[WrkResult, Busy]:
    time.sleep(0.2)
    p0, u0 = proxy.cpuSeconds(), sum(u.cpuSeconds() for u in upstreams)
    t0 = time.monotonic()
    result = runWrk(tools, proxy.port, "/small", connections, seconds, rate, warmup)
    wall = time.monotonic() - t0
    p1, u1 = proxy.cpuSeconds(), sum(u.cpuSeconds() for u in upstreams)
    return result, Busy((p1 - p0) / wall, (u1 - u0 + result.clientCPU) / wall)


@dataclass
class Transfer:
    proxy: str
    direction: str
    round: int
    ok: bool
    bytes: int
    seconds: float
    proxyCPU: float
    clientCPU: float
    upstreamCPU: float
    rssBeforeKiB: int
    peakRssKiB: int
    polledPeakKiB: int
    detail: str

    @property
    def mbPerSecond(self) -> float | None:
        return self.bytes / self.seconds / 1e6 if self.ok and self.seconds else None

    @property
    def cpuPerGB(self) -> float | None:
        return self.proxyCPU / (self.bytes / 1e9) if self.ok and self.bytes else None

    @property
    def proxyBusy(self) -> float | None:
        return 100 * self.proxyCPU / self.seconds if self.ok and self.seconds else None


class RSSPoller:
    """Polls a server's VmRSS in a thread; C{peak} is the largest sum seen."""

    def __init__(self, server: Server, every: float = 0.02) -> None:
        self.server = server
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.status("VmRSS"))
            self._stop.wait(self.every)

    def __enter__(self) -> RSSPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def transferSample(proxy: Server, upstreams: Sequence[Server], tools: Tools,
                   direction: str, size: int, roundNo: int) -> Transfer:
    base = [tools.curl, "-sS", "-k", "--http1.1", "--tlsv1.3", "--cert", tools.clientCert,
            "--key", tools.clientKey, "--max-time", "300", "-w",
            "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    url = f"https://127.0.0.1:{proxy.port}"
    if direction == "download":
        argv = base + ["-o", "/dev/null", f"{url}/big"]
    else:  # no Expect: 100-continue; the sink's answer names the bytes it read
        argv = base + ["-T", tools.bigFile, "-X", "POST", "-H", "Expect:",
                       "-o", "-", f"{url}/upload"]
    time.sleep(0.2)
    proxy.resetPeak()
    rss0 = proxy.status("VmRSS")
    p0, u0 = proxy.cpuSeconds(), sum(u.cpuSeconds() for u in upstreams)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with RSSPoller(proxy) as poller:
        done = subprocess.run(pinned(CLIENT_CORE) + argv, capture_output=True, text=True,
                              timeout=330)
        time.sleep(0.05)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    p1, u1 = proxy.cpuSeconds(), sum(u.cpuSeconds() for u in upstreams)
    peak = proxy.status("VmHWM")
    out = done.stdout.strip()
    fields = out.splitlines()[-1].split() if out else []  # -w's line comes last
    ok, moved, seconds = False, 0, 0.0
    if done.returncode == 0 and len(fields) == 4:
        code, down, up, total = fields
        moved = int(float(down if direction == "download" else up))
        seconds = float(total)
        ok = code == "200" and moved == size
        if direction == "upload":
            ok = ok and f"received {size} bytes" in out
    detail = (out + " " + done.stderr.strip()).strip()[-300:]
    return Transfer(proxy.name, direction, roundNo, ok, moved, seconds, p1 - p0,
                    (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                    u1 - u0, rss0, max(peak, poller.peak), poller.peak, detail)


@dataclass
class Idle:
    proxy: str
    round: int
    target: int
    opened: int
    alive: int
    errors: dict[str, int]
    openSeconds: float
    settleSeconds: float
    rssBeforeKiB: int
    rssOpenKiB: int
    rssAfterCloseKiB: int
    filesBefore: int
    filesOpen: int
    proxyCPU: float

    @property
    def kibPerConnection(self) -> float | None:
        if not self.alive:
            return None
        return (self.rssOpenKiB - self.rssBeforeKiB) / self.alive

    @property
    def cpuPerHandshakeUs(self) -> float | None:
        return self.proxyCPU / self.opened * 1e6 if self.opened else None


def idleSample(proxy: Server, tools: Tools, count: int, roundNo: int,
               limit: float, concurrency: int = 32) -> Idle:
    # A few requests first, so that what a request brings in (modules, the upstream
    # pool) is in the baseline.
    runWrk(tools, proxy.port, "/small", 4, 1)
    proxy.settle()
    rss0, files0, cpu0 = proxy.status("VmRSS"), proxy.openFiles(), proxy.cpuSeconds()
    argv = pinned(CLIENT_CORE) + [
        sys.executable, str(Path(__file__).resolve()), "--idle-client", str(proxy.port),
        "--count", str(count), "--cert", tools.clientCert, "--key", tools.clientKey,
        "--concurrency", str(concurrency), "--limit", str(limit)]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert client.stdin is not None and client.stdout is not None
        opened = json.loads(client.stdout.readline() or "{}")
        if "opened" not in opened:
            raise RuntimeError(f"the idle client failed (exit {client.wait(10)})")
        settled = proxy.settle()
        rss1, files1, cpu1 = proxy.status("VmRSS"), proxy.openFiles(), proxy.cpuSeconds()
        client.stdin.write("alive\n")
        client.stdin.flush()
        alive = json.loads(client.stdout.readline())["alive"]
        client.stdin.write("close\n")
        client.stdin.flush()
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
    proxy.settle()
    return Idle(proxy.name, roundNo, count, opened["opened"], alive, opened["errors"],
                opened["seconds"], settled, rss0, rss1, proxy.status("VmRSS"), files0, files1,
                cpu1 - cpu0)


# -- profiles -------------------------------------------------------------------------


def _pySpy() -> str | None:
    found = shutil.which("py-spy")
    if found is None and (BIN_DIR / "py-spy").exists():
        found = str(BIN_DIR / "py-spy")
    return found


def _frame(frame: str) -> str:
    """``function (file)``: paths shortened, line numbers dropped (per function, then)."""
    for prefix in (str(Path(sys.prefix)), str(Path(sys.base_prefix)),
                   str(BENCH_ROOT)):
        frame = frame.replace(prefix + "/", "")
    frame = frame.replace(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/", "")
    frame = frame.replace("site-packages/", "")
    name, paren, where = frame.rpartition(" (")
    if paren and where.endswith(")") and ":" in where:
        frame = f"{name} ({where[:-1].rpartition(':')[0]})"
    return frame


BENCH_ROOT = Path(__file__).resolve().parent.parent


def summariseProfile(raw: Path, rate: int, seconds: float, top: int = 40) -> dict[str, Any]:
    """Self and inclusive shares of the reactor thread's samples (py-spy's raw format)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or "Thread._bootstrap" in stack.split(";")[0]:
            continue  # the thread pool's idle workers
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[float, str]]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(round(100 * c / total, 1), f) for f, c in best] if total else []

    return {"samples": total, "busy_estimate": total / (rate * seconds) if seconds else None,
            "self_pct": ranked(own), "inclusive_pct": ranked(inclusive), "raw": str(raw)}


def profileUnder(proxy: Server, label: str, notes: list[str], load: Callable[[], object],
                 rate: int = 100) -> dict[str, Any]:
    spy = _pySpy()
    if spy is None:
        notes.append("--profile: py-spy is not installed (pip install py-spy)")
        print(notes[-1])
        return {}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    raw = LOG_DIR / f"py-spy-{label}.txt"
    pids = proxy.pids()
    argv = pinned(CLIENT_CORE) + [spy, "record", "-p", str(pids[0]), "-r", str(rate),
                                  "-f", "raw", "-o", str(raw), "-d", "600"]
    sampler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        time.sleep(1.5)  # attached
        t0 = time.monotonic()
        load()
        seconds = time.monotonic() - t0
        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on ^C
        _, err = sampler.communicate(timeout=30)
    finally:
        if sampler.poll() is None:
            os.killpg(sampler.pid, signal.SIGKILL)
            sampler.wait()
    if not raw.exists():
        notes.append(f"--profile {label}: py-spy wrote nothing: {err.decode()[-300:]}")
        print(notes[-1])
        return {}
    summary = summariseProfile(raw, rate, seconds)
    print(f"\npy-spy, kongtls under {label} ({summary['samples']} samples of the reactor "
          f"thread, busy ~{100 * (summary['busy_estimate'] or 0):.0f}%): self time")
    for pct, frame in summary["self_pct"][:15]:
        print(f"  {pct:5.1f}%  {frame}")
    print("inclusive (below the reactor loop's 90%+ frames)")
    for pct, frame in [(p, f) for p, f in summary["inclusive_pct"] if p < 90][:25]:
        print(f"  {pct:5.1f}%  {frame}")
    return summary


# -- report ---------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    spec: str
    values: dict[str, list[float | None]] = field(default_factory=dict)

    def median(self, proxy: str) -> float | None:
        return median(self.values.get(proxy, []))

    def ratio(self) -> float | None:
        return ratio(self.median("kongtls"), self.median("nginx"))

    def asJSON(self) -> dict[str, Any]:
        return {"label": self.label,
                **{f"{p}_median": self.median(p) for p in PROXIES},
                **{f"{p}_rounds": self.values.get(p, []) for p in PROXIES},
                "ratio_kongtls_nginx": self.ratio()}


def table(metrics: Sequence[Metric], write: Callable[[str], object] = print) -> None:
    width = max(len(m.label) for m in metrics)
    write(f"{'metric':<{width}}  {'kongtls':>9}  {'nginx':>9}  {'kongtls/nginx':>13}  "
          f"rounds kongtls | nginx")
    for m in metrics:
        rounds = " | ".join(",".join(fmt(v, m.spec) for v in m.values.get(p, []))
                            for p in PROXIES)
        write(f"{m.label:<{width}}  {fmt(m.median('kongtls'), m.spec):>9}  "
              f"{fmt(m.median('nginx'), m.spec):>9}  {fmt(m.ratio(), '.2f'):>12}x  {rounds}")


# -- main -----------------------------------------------------------------------------


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--connections", type=int, default=32,
                        help="wrk's keep-alive connections (default 32; kongtls's upstream "
                             "pool keeps 32 idle connections, like nginx's keepalive 32)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds of each requests/s and latency run (default 8)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="the fixed rate of the latency runs (default: half kongtls's "
                             "median requests/s)")
    parser.add_argument("--body-mib", type=int, default=1024,
                        help="MiB of each download and upload (default 1024)")
    parser.add_argument("--idle-connections", type=int, default=10000,
                        help="idle TLS connections to open (default 10000)")
    parser.add_argument("--idle-rounds", type=int, default=1,
                        help="rounds of the idle-connection phase (default 1: it takes about "
                             "40 s a round and its figures vary by 0.1%%)")
    parser.add_argument("--idle-limit", type=float, default=90.0,
                        help="seconds allowed to open them (default 90)")
    parser.add_argument("--profile", action="store_true",
                        help="also sample kongtls with py-spy (pip install py-spy) under "
                             "the requests/s load, a download and an upload")
    parser.add_argument("--no-bare", action="store_true",
                        help="leave out the bare Twisted TLS proxy (requests/s ceiling)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["rps", "latency", "transfer", "idle"],
                        help="leave out a phase (repeatable)")
    parser.add_argument("--nginx-binary", type=Path, default=NGINX,
                        help=f"the nginx to run (default {NGINX})")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE,
                        help=f"JSON results (default {RESULTS_FILE})")
    # The helper processes this script starts.
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=90.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.connections < 1 or args.duration < 2 or args.body_mib < 1:
        parser.error("--rounds, --connections, --body-mib must be positive, --duration >= 2")
    return args


def raiseFileLimit(notes: list[str], wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < wanted:
        notes.append(f"open files limited to {soft} (wanted {wanted})")
        print(notes[-1])


def toolVersion(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    if args.sink:
        runSink(args.sink)
        return 0
    if args.idle_client:
        runIdleClient(args.idle_client, args.count, args.cert, args.key, args.concurrency,
                      args.limit)
        return 0

    stopOnTerm()
    checkMachine()
    os.sched_setaffinity(0, {CLIENT_CORE})
    started = time.monotonic()
    notes: list[str] = []
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    if not args.nginx_binary.exists():
        raise SystemExit(f"{args.nginx_binary} is needed (apt-get install nginx)")
    raiseFileLimit(notes, args.idle_connections + 2000)
    idleTarget = min(args.idle_connections, nofile() - 500)
    if idleTarget < args.idle_connections:
        notes.append(f"idle connections reduced to {idleTarget} by the open-files limit")
        print(notes[-1])

    pki = TestPKI()
    work = tempfile.TemporaryDirectory(prefix="kongtls-proxy-bench-")
    home = Path(work.name)
    home.chmod(0o755)  # nginx's worker (user nobody) reads the files
    servers: list[Server] = []
    metrics: dict[str, Metric] = {}
    samples: dict[str, list[dict[str, Any]]] = {"rps": [], "latency": [], "transfer": [],
                                                "idle": []}
    rate = args.rate
    size = args.body_mib * MiB
    certPresented = "?"
    profiles: dict[str, Any] = {}
    shimNote = ""

    def metric(key: str, label: str, spec: str, proxy: str, value: float | None) -> None:
        m = metrics.setdefault(key, Metric(key, label, spec))
        m.values.setdefault(proxy, []).append(value)

    try:
        www = home / "www"
        www.mkdir()
        (www / "small").write_bytes(b"x" * (SMALL_BODY - 1) + b"\n")
        with open(www / "big", "wb") as f:
            f.truncate(size)  # sparse: no disk, read as zeros from the page cache
        # Read once, so that the page cache holds it: the first reader of a fresh sparse
        # file waits while the kernel fills its pages (the upstream, on the load core,
        # sent at a third of the speed), and that was always the first proxy's download.
        with open(www / "big", "rb") as f:
            while f.read(MiB):
                pass
        for path in (www, www / "small", www / "big"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        shim, shimNote = buildShim(home)
        if shimNote:
            notes.append(shimNote)
            print(shimNote)
        lua = home / "bench.lua"
        lua.write_text(WRK_LUA)
        tools = Tools(shutil.which("wrk") or "wrk", shutil.which("curl") or "curl", shim,
                      str(lua), pki.client.certFile, pki.client.keyFile, str(www / "big"))

        sink = sinkServer(home)
        servers.append(sink)
        sink.start()
        upstream = nginxInstance("upstream", "upstream nginx", UPSTREAM_CONF, home,
                                 CLIENT_CORE, args.nginx_binary, sink=sink.port, www=www)
        servers.append(upstream)
        upstream.start()
        upstreams = [upstream, sink]
        proxies = {
            "kongtls": kongtlsProxy(pki, home, upstream.port),
            "nginx": nginxInstance("nginx", "nginx", PROXY_CONF, home, SERVER_CORE,
                                   args.nginx_binary, upstream=upstream.port,
                                   cert=pki.server.certFile, key=pki.server.keyFile),
        }
        servers.extend(proxies.values())
        bare: Server | None = None
        if "rps" not in args.skip and not args.no_bare:
            bare = bareProxy(pki, home, upstream.port)
            servers.append(bare)
        for proxy in [*proxies.values(), *([bare] if bare else [])]:
            proxy.start()
        for server in servers:
            print(f"{server.label}: pid {' '.join(map(str, server.pids()))} on core "
                  f"{server.core}, port {server.port}")
        certPresented = checkClientCertificate(tools, proxies["nginx"])
        print(f"wrk presents a client certificate over TLS 1.3: {certPresented}")
        if certPresented != "yes" and shim is not None:
            notes.append(f"the client-certificate shim did not work ({certPresented}); "
                         f"wrk ran without a client certificate")
            print(notes[-1])
            tools.shim = None

        def order(roundNo: int) -> list[Server]:
            names = PROXIES if roundNo % 2 == 0 else PROXIES[::-1]
            return [proxies[n] for n in names]

        def ensure() -> None:
            for server in servers:
                server.ensureRunning(notes)

        # -- 1a. requests/s
        if "rps" not in args.skip:
            for proxy in proxies.values():  # warm-up: upstream pools, code paths
                runWrk(tools, proxy.port, "/small", args.connections, 2)
            for roundNo in range(args.rounds):
                for proxy in order(roundNo):
                    ensure()
                    result, busy = proxy.measure(notes, rpsSample, proxy, upstreams, tools,
                                                 args.connections, args.duration)
                    metric("rps", f"requests/s ({args.connections} keep-alive conns)", ".0f",
                           proxy.name, result.perSecond)
                    metric("rps_proxy_busy", "  proxy CPU busy (%)", ".0f", proxy.name,
                           100 * busy.proxy)
                    metric("rps_load_busy", "  load core busy: wrk + upstream (%)", ".0f",
                           proxy.name, 100 * busy.load)
                    samples["rps"].append({"proxy": proxy.name, "round": roundNo,
                                           "requests": result.requests,
                                           "seconds": result.seconds,
                                           "requests_per_second": result.perSecond,
                                           "errors": result.errors, "latency_ms": result.latency,
                                           "proxy_busy": busy.proxy, "load_core_busy": busy.load})
                    print(f"round {roundNo + 1}/{args.rounds} requests/s {proxy.label:<8} "
                          f"{result.perSecond:8.0f}/s  errors {result.errorCount}  proxy busy "
                          f"{100 * busy.proxy:.0f}%, load core busy {100 * busy.load:.0f}%")
                if bare is not None:
                    ensure()
                    result, busy = bare.measure(notes, rpsSample, bare, upstreams, tools,
                                                args.connections, args.duration)
                    metric("rps", "", ".0f", "bare", result.perSecond)
                    samples["rps"].append({"proxy": "bare", "round": roundNo,
                                           "requests": result.requests,
                                           "seconds": result.seconds,
                                           "requests_per_second": result.perSecond,
                                           "errors": result.errors,
                                           "proxy_busy": busy.proxy})
                    print(f"round {roundNo + 1}/{args.rounds} requests/s bare Twisted proxy "
                          f"{result.perSecond:8.0f}/s  errors {result.errorCount}  proxy busy "
                          f"{100 * busy.proxy:.0f}%")
        # -- 1b. latency at a fixed rate
        if "latency" not in args.skip:
            if not rate:
                best = metrics["rps"].median("kongtls") if "rps" in metrics else None
                rate = (best or 1000.0) / 2
            rate = round(rate)
            for roundNo in range(args.rounds):
                for proxy in order(roundNo):
                    ensure()
                    result, busy = proxy.measure(notes, rpsSample, proxy, upstreams, tools,
                                                 args.connections, args.duration + 1,
                                                 rate=rate, warmup=1.0)
                    achieved = result.perSecond
                    good = not result.errorCount and achieved > 0.9 * rate
                    for pct in ("p50", "p99"):
                        metric(f"latency_{pct}", f"{pct} latency at {rate:.0f}/s (ms)", ".2f",
                               proxy.name, result.latency[pct] if good else None)
                    samples["latency"].append({"proxy": proxy.name, "round": roundNo,
                                               "rate": rate, "achieved_rate": achieved,
                                               "requests": result.requests,
                                               "errors": result.errors,
                                               "latency_ms": result.latency,
                                               "proxy_busy": busy.proxy,
                                               "load_core_busy": busy.load})
                    print(f"round {roundNo + 1}/{args.rounds} latency at {rate:.0f}/s "
                          f"{proxy.label:<8} p50 {result.latency['p50']:.2f} ms, p99 "
                          f"{result.latency['p99']:.2f} ms, max {result.latency['max']:.1f} ms "
                          f"({achieved:.0f}/s, errors {result.errorCount}, proxy busy "
                          f"{100 * busy.proxy:.0f}%)")
        # -- 2. bulk transfers
        if "transfer" not in args.skip:
            for roundNo in range(args.rounds):
                for proxy in order(roundNo):
                    for direction in ("download", "upload"):
                        ensure()
                        t = proxy.measure(notes, transferSample, proxy, upstreams, tools,
                                          direction, size, roundNo)
                        label = f"{direction} {args.body_mib} MiB"
                        metric(f"{direction}_mbps", f"{label}: MB/s", ".0f", proxy.name,
                               t.mbPerSecond)
                        metric(f"{direction}_cpu", f"{label}: proxy CPU s/GB", ".2f",
                               proxy.name, t.cpuPerGB)
                        metric(f"{direction}_rss", f"{label}: proxy peak RSS MiB", ".0f",
                               proxy.name, t.peakRssKiB / 1024 if t.ok else None)
                        metric(f"{direction}_busy", f"{label}: proxy CPU busy (%)", ".0f",
                               proxy.name, t.proxyBusy)
                        samples["transfer"].append({
                            "proxy": t.proxy, "direction": t.direction, "round": t.round,
                            "ok": t.ok, "bytes": t.bytes, "seconds": t.seconds,
                            "mb_per_second": t.mbPerSecond, "proxy_cpu_s": t.proxyCPU,
                            "proxy_cpu_s_per_gb": t.cpuPerGB, "proxy_busy_pct": t.proxyBusy,
                            "client_cpu_s": t.clientCPU,
                            "upstream_cpu_s": t.upstreamCPU,
                            "rss_before_kib": t.rssBeforeKiB, "peak_rss_kib": t.peakRssKiB,
                            "polled_peak_rss_kib": t.polledPeakKiB, "detail": t.detail})
                        print(f"round {roundNo + 1}/{args.rounds} {direction:<8} "
                              f"{proxy.label:<8} {fmt(t.mbPerSecond):>5} MB/s "
                              f"{fmt(t.cpuPerGB, '.2f')} CPU s/GB, busy "
                              f"{fmt(t.proxyBusy)}%, RSS "
                              f"{t.rssBeforeKiB // 1024} -> peak {t.peakRssKiB // 1024} MiB"
                              f"{'' if t.ok else '  FAILED: ' + t.detail}")
        # -- where kongtls spends its time
        if args.profile:
            kongtls = proxies["kongtls"]
            ensure()
            profiles["requests"] = profileUnder(kongtls, "requests", notes, lambda: runWrk(
                tools, kongtls.port, "/small", args.connections, args.duration))
            for direction in ("download", "upload"):
                profiles[direction] = profileUnder(
                    kongtls, direction, notes, functools.partial(
                        transferSample, kongtls, upstreams, tools, direction, size, -1))
        # -- 3. idle connections
        if "idle" not in args.skip and idleTarget > 0:
            for roundNo in range(args.idle_rounds):
                for proxy in order(roundNo):
                    ensure()
                    proxy.restart()
                    i = proxy.measure(notes, idleSample, proxy, tools, idleTarget, roundNo,
                                      args.idle_limit)
                    metric("idle_kib", f"memory per idle mTLS connection (KiB, "
                           f"{idleTarget} open)", ".1f", proxy.name, i.kibPerConnection)
                    metric("idle_open_s", f"seconds to open {idleTarget} connections", ".1f",
                           proxy.name, i.openSeconds if i.opened == idleTarget else None)
                    samples["idle"].append({
                        "proxy": i.proxy, "round": i.round, "target": i.target,
                        "opened": i.opened, "alive": i.alive, "errors": i.errors,
                        "open_seconds": i.openSeconds, "settle_seconds": i.settleSeconds,
                        "rss_before_kib": i.rssBeforeKiB, "rss_open_kib": i.rssOpenKiB,
                        "rss_after_close_kib": i.rssAfterCloseKiB,
                        "open_files_before": i.filesBefore, "open_files_open": i.filesOpen,
                        "kib_per_connection": i.kibPerConnection,
                        "proxy_cpu_us_per_handshake": i.cpuPerHandshakeUs})
                    print(f"round {roundNo + 1}/{args.rounds} idle {proxy.label:<8} "
                          f"{i.alive}/{i.target} open in {i.openSeconds:.1f} s "
                          f"(errors {i.errors or 0}), RSS {i.rssBeforeKiB // 1024} -> "
                          f"{i.rssOpenKiB // 1024} MiB = {fmt(i.kibPerConnection, '.1f')} "
                          f"KiB/conn, {i.rssAfterCloseKiB // 1024} MiB after close; "
                          f"{fmt(i.cpuPerHandshakeUs)} us CPU/handshake")
    finally:
        cleanUp(servers[::-1], pki.close, work.cleanup)

    ordered = [metrics[k] for k in ("rps", "rps_proxy_busy", "rps_load_busy", "latency_p50",
                                    "latency_p99", "download_mbps", "download_cpu",
                                    "download_busy", "download_rss", "upload_mbps",
                                    "upload_cpu", "upload_busy", "upload_rss", "idle_kib",
                                    "idle_open_s")
               if k in metrics]
    print("")
    print(f"medians of {args.rounds} rounds (kongtls/nginx > 1: kongtls higher)")
    if ordered:
        table(ordered)
    if "rps" in metrics and metrics["rps"].median("bare"):
        rps = metrics["rps"]
        print(f"bare Twisted TLS proxy (bench/bare_tls_proxy.py), requests/s: "
              f"{fmt(rps.median('bare'), '.0f')}; kongtls/bare "
              f"{fmt(ratio(rps.median('kongtls'), rps.median('bare')), '.2f')}x, bare/nginx "
              f"{fmt(ratio(rps.median('bare'), rps.median('nginx')), '.2f')}x")
    for server in servers:
        problems = logProblems(server)
        # wrk ends a run by closing its connections, requests in flight or not: kongtls
        # cancels their upstream calls and says so.
        cancelled = [p for p in problems if "CancelledError" in p]
        problems = [p for p in problems if "CancelledError" not in p]
        if cancelled:
            notes.append(f"{server.label} logged {len(cancelled)} 'upstream ... failed: "
                         f"CancelledError' warnings: requests in flight when wrk closed its "
                         f"connections at the end of a run")
            print(notes[-1])
        if problems:
            notes.append(f"{server.label} logged {len(problems)} problem lines "
                         f"(see {server.logPath}); first: {problems[0][:200]}")
            print(notes[-1])
        if server.restarts:
            notes.append(f"{server.label} was restarted {server.restarts} times")

    env = environment(args.nginx_binary)
    env.update({
        "wrk": toolVersion(["wrk", "--version"]),
        "curl": toolVersion(["curl", "--version"]),
        "cores": os.cpu_count(),
        "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB,
    })
    report = {
        "benchmark": "kongtls vs nginx as the same mTLS reverse proxy (TLS 1.3, ECDSA P-256)",
        "date": now(),
        "settings": {
            "rounds": args.rounds, "idle_rounds": args.idle_rounds,
            "connections": args.connections,
            "duration_s": args.duration, "latency_rate": rate, "body_bytes": size,
            "small_body_bytes": SMALL_BODY, "idle_connections": idleTarget,
            "server_core": SERVER_CORE, "load_core": CLIENT_CORE,
            "wrk_client_certificate": certPresented,
            "servers": {s.name: s.argv for s in servers},
        },
        "environment": env,
        "summary": {m.key: m.asJSON() for m in ordered},
        "bare_twisted_proxy_rps": metrics["rps"].median("bare") if "rps" in metrics else None,
        "profiles": profiles,
        "samples": samples,
        "notes": notes,
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    writeReport(args.output, report)
    return 0


if __name__ == "__main__":
    run(main)
