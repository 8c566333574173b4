"""Server CPU per full mutual-TLS handshake: kongtls against a bare Twisted TLS server.

Both servers (and nginx with ``--nginx``) run in the same run as subprocesses pinned to
core 0, started once and measured in turns; the load generator is this process's
children (``--clients`` processes, each one handshake at a time), pinned to core 1.
Every handshake is a new TCP connection and a full handshake (session tickets and the
session cache are off on every server and the client never offers a session) with an
ECDSA P-256 server certificate, X25519, and an ECDSA P-256 client certificate that each
server asks for. The client then sends close_notify and waits for the server's answer, so
the server has processed the client's last flight (in TLS 1.3 the client's Certificate,
CertificateVerify and Finished come after the client's handshake is done) before the
handshake counts.

* kongtls: ``twistd kongtls`` with a declarative file whose one global plugin is the
  bundled ``client-certificate`` (``ca_certs`` the root, ``disable_session_reuse``);
* bare Twisted: ``bench/bare_tls_server.py``, an idle Protocol under
  ``CertificateOptions`` with VERIFY_PEER and an accept-all callback, naming the same CA;
* nginx: ``ssl_verify_client optional_no_ca``, one worker, ``return 200``.

CPU per handshake is the server's utime + stime (``/proc/PID/stat``, all threads, for
nginx its worker too) over a batch, divided by the handshakes completed. Each round
measures every server at every TLS version, the order of the servers rotating from round
to round; the report gives the median over rounds per server and version, the ratios
kongtls / bare Twisted (and / nginx) of those medians, and the median of the ratios
within each round (robust to the machine getting faster or slower during the run). "busy"
is CPU time over wall time: a server that waits for the client between handshakes costs
more per handshake, so both busy figures are shown.

    /tmp/venv/bin/python bench/handshake_cpu.py [--rounds 3] [--handshakes 2000] [--nginx]

Results: bench/results/handshake_cpu.json; the servers' logs: bench/results/handshake_cpu-logs/.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
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
    environment,
    fmt,
    freePort,
    kongtlsServer,
    logProblems,
    median,
    nginxServer,
    now,
    ratio,
    run,
    stopOnTerm,
    writeReport,
)
from _common import clientContext as _tlsClientContext

from kongtls.testing import TestPKI

RESULTS_FILE = RESULTS_DIR / "handshake_cpu.json"
LOG_DIR = RESULTS_DIR / "handshake_cpu-logs"

TLS_VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}
SERVER_NAME = "localhost"  # sent as SNI; the server certificate is for it and 127.0.0.1


# -- servers --------------------------------------------------------------------------


def kongtlsHandshakeServer(pki: TestPKI, work: Path) -> Server:
    document = {
        "_format_version": "3.0",
        "services": [{"name": "nowhere", "url": "http://127.0.0.1:9/"}],
        "plugins": [{"name": "client-certificate",
                     "config": {"ca_certs": [pki.caPEM(pki.root)],
                                "disable_session_reuse": True}}],
    }
    return kongtlsServer(pki, work, LOG_DIR, document)


def bareServer(pki: TestPKI, work: Path) -> Server:
    port = freePort()
    argv = [sys.executable, str(BENCH_DIR / "bare_tls_server.py"), "--port", str(port),
            "--cert", pki.server.certFile, "--key", pki.server.keyFile,
            "--ca-names", pki.rootFile]
    return Server("bare", "bare Twisted", argv, port, LOG_DIR, cwd=str(work))


NGINX_CONF = NGINX_MAIN + """\
http {{
    access_log off;
""" + NGINX_TEMP_PATHS + """\
    server {{
""" + NGINX_TLS + """\
        location / {{ return 200; }}
    }}
}}
"""


def handshakeNginx(pki: TestPKI, work: Path, binary: Path = NGINX) -> Server:
    return nginxServer("nginx", "nginx", NGINX_CONF, work, LOG_DIR, SERVER_CORE, binary,
                       limits="", connections=1024, listen="",
                       cert=pki.server.certFile, key=pki.server.keyFile)


# -- load: what runs in the client processes -----------------------------------------


@dataclass(frozen=True)
class ClientFiles:
    """What a client process needs: its certificate and the server leaf to expect."""

    certFile: str
    keyFile: str
    serverLeaf: bytes  # DER


_client: dict[str, Any] = {}  # a client process's files and SSL contexts


def _initClient(files: ClientFiles) -> None:
    os.sched_setaffinity(0, {CLIENT_CORE})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and ends us,
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # with SIGTERM (Pool.terminate)
    _client["files"] = files
    _client["contexts"] = {}


def clientContext(files: ClientFiles, tls: str) -> ssl.SSLContext:
    # The server's leaf is compared with the one it must present rather than verified
    # against the root.
    return _tlsClientContext(files.certFile, files.keyFile, TLS_VERSIONS[tls])


def handshakeOnce(ctx: ssl.SSLContext, port: int, serverLeaf: bytes,
                  timeout: float) -> tuple[str | None, str]:
    """One full handshake then a clean close: (cipher, "") or (None, what went wrong)."""
    stage = "connect"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stage = "handshake"
            tls = ctx.wrap_socket(raw, server_hostname=SERVER_NAME)
            if tls.getpeercert(binary_form=True) != serverLeaf:
                return None, "handshake: the server presented another certificate"
            cipher = tls.cipher()
            stage = "close"
            # Our close_notify, then the server's close_notify (Twisted) or its TCP close
            # (nginx sends none): either way it has read our whole last flight, which in
            # TLS 1.3 (Certificate, CertificateVerify, Finished) follows our handshake's end.
            try:
                tls.unwrap()
            except ssl.SSLEOFError:
                pass
            return (cipher[0] if cipher else "?"), ""
    except (OSError, ValueError) as e:
        return None, f"{stage}: {type(e).__name__}: {getattr(e, 'reason', None) or e}"


@dataclass
class Batch:
    """What one client process did with one task."""

    completed: int
    errors: dict[str, int]
    cipher: str | None
    cpu: float


def clientBatch(task: tuple[int, str, int, float]) -> Batch:
    """C{count} handshakes one after another, in a client process."""
    port, tls, count, timeout = task
    files: ClientFiles = _client["files"]
    contexts: dict[str, ssl.SSLContext] = _client["contexts"]
    if tls not in contexts:
        contexts[tls] = clientContext(files, tls)
    ctx = contexts[tls]
    cpu0 = time.process_time()
    completed, errors, cipher, streak = 0, Counter[str](), None, 0
    for _ in range(count):
        got, error = handshakeOnce(ctx, port, files.serverLeaf, timeout)
        if got is not None:
            completed, cipher, streak = completed + 1, got, 0
        else:
            errors[error] += 1
            streak += 1
            if streak >= 20:
                break
    return Batch(completed, dict(errors), cipher, time.process_time() - cpu0)


@dataclass
class Load:
    """What one batch of handshakes did, seen from the client side."""

    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cipher: str | None = None
    wall: float = 0.0
    clientCPU: float = 0.0


class LoadGenerator:
    """Client processes on core 1, each doing handshakes one after another.

    Processes rather than threads: threads sharing one OpenSSL 3 library (and the GIL
    between handshakes) left both cores partly idle here.
    """

    def __init__(self, processes: int, files: ClientFiles, chunk: int = 25,
                 timeout: float = 10.0) -> None:
        self.processes = processes
        self.chunk = chunk
        self.timeout = timeout
        self._pool = multiprocessing.get_context("fork").Pool(processes, _initClient, (files,))

    def run(self, port: int, tls: str, count: int) -> Load:
        tasks = [(port, tls, min(self.chunk, count - done), self.timeout)
                 for done in range(0, count, self.chunk)]
        load = Load()
        t0 = time.monotonic()
        results = self._pool.imap_unordered(clientBatch, tasks)
        for _ in tasks:
            try:
                batch = results.next(timeout=self.chunk * self.timeout + 30)
            except multiprocessing.TimeoutError:
                raise RuntimeError("a client process stopped answering") from None
            load.completed += batch.completed
            load.errors.update(batch.errors)
            load.cipher = batch.cipher or load.cipher
            load.clientCPU += batch.cpu
        load.wall = time.monotonic() - t0
        return load

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


@dataclass
class Sample:
    """One measured batch against one server."""

    server: str
    tls: str
    round: int
    completed: int
    errors: dict[str, int]
    cipher: str | None
    serverCPU: float
    wall: float
    clientCPU: float

    @property
    def usPerHandshake(self) -> float | None:
        return self.serverCPU / self.completed * 1e6 if self.completed else None

    @property
    def serverBusy(self) -> float:
        return self.serverCPU / self.wall if self.wall else 0.0

    @property
    def clientBusy(self) -> float:
        return self.clientCPU / self.wall if self.wall else 0.0


def measure(server: Server, load: LoadGenerator, tls: str, roundNo: int, count: int,
            settle: float = 0.1) -> Sample:
    if not server.alive():
        raise RuntimeError(f"{server.label} has died; log:\n{server.logTail()}")
    time.sleep(settle)  # whatever the server still did for the last batch is over
    before = server.cpuSeconds()
    done = load.run(server.port, tls, count)
    time.sleep(settle)  # closing the last connections is part of the cost
    after = server.cpuSeconds()
    return Sample(server.name, tls, roundNo, done.completed, dict(done.errors), done.cipher,
                  after - before, done.wall, done.clientCPU)


# -- report ---------------------------------------------------------------------------


RATIOS = (("kongtls", "bare"), ("kongtls", "nginx"), ("bare", "nginx"))


def summarise(samples: Sequence[Sample], servers: Sequence[Server],
              versions: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    names = [s.name for s in servers]
    for tls in versions:
        perServer: dict[str, Any] = {}
        for name in names:
            mine = [s for s in samples if s.server == name and s.tls == tls]
            errors: Counter[str] = Counter()
            for s in mine:
                errors.update(s.errors)
            perServer[name] = {
                "us_per_handshake_median": median([s.usPerHandshake for s in mine]),
                "us_per_handshake_rounds": [s.usPerHandshake for s in mine],
                "handshakes": sum(s.completed for s in mine),
                "errors": sum(errors.values()),
                "error_kinds": dict(errors),
                "cipher": next((s.cipher for s in mine if s.cipher), None),
                "server_busy_median": median([s.serverBusy for s in mine]),
                "client_busy_median": median([s.clientBusy for s in mine]),
                "handshakes_per_second_median": median(
                    [s.completed / s.wall if s.wall else None for s in mine]),
            }
        ratios: dict[str, Any] = {}
        for a, b in RATIOS:
            if a not in perServer or b not in perServer:
                continue
            byRound = []
            for sa in (s for s in samples if s.server == a and s.tls == tls):
                sb = next((s for s in samples
                           if s.server == b and s.tls == tls and s.round == sa.round), None)
                byRound.append(ratio(sa.usPerHandshake, sb.usPerHandshake if sb else None))
            ratios[f"{a}/{b}"] = {
                "of_medians": ratio(perServer[a]["us_per_handshake_median"],
                                     perServer[b]["us_per_handshake_median"]),
                "median_of_rounds": median(byRound),
                "rounds": byRound,
            }
        summary[f"TLS{tls}"] = {"servers": perServer, "ratios": ratios}
    return summary


def printTable(summary: dict[str, Any], servers: Sequence[Server],
               write: Callable[[str], object] = print) -> None:
    write("")
    write("server CPU per full mutual-TLS handshake (median of rounds), "
          "busy = CPU time / wall time")
    write(f"{'TLS':<7} {'server':<13} {'us/hs':>6}  {'rounds (us/hs)':<18} {'hs':>6} "
          f"{'err':>4} {'srv busy':>8} {'cli busy':>8} {'hs/s':>5}  cipher")
    for version, entry in summary.items():
        for server in servers:
            row = entry["servers"][server.name]
            rounds = ",".join(fmt(v) for v in row["us_per_handshake_rounds"])
            write(f"{version:<7} {server.label:<13} {fmt(row['us_per_handshake_median']):>6}  "
                  f"{rounds:<18} {row['handshakes']:>6} {row['errors']:>4} "
                  f"{fmt(100 * (row['server_busy_median'] or 0)):>7}% "
                  f"{fmt(100 * (row['client_busy_median'] or 0)):>7}% "
                  f"{fmt(row['handshakes_per_second_median']):>5}  {row['cipher'] or '-'}")
        for name, pair in entry["ratios"].items():
            rounds = ", ".join(fmt(r, ".2f") for r in pair["rounds"])
            write(f"{version:<7} {name:<13} {fmt(pair['of_medians'], '.2f')}x "
                  f"(median of per-round ratios {fmt(pair['median_of_rounds'], '.2f')}x: "
                  f"{rounds})")
    write("")


# -- main -----------------------------------------------------------------------------


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--handshakes", type=int, default=2000,
                        help="handshakes per server, TLS version and round (default 2000)")
    parser.add_argument("--clients", type=int, default=4,
                        help="client processes on core 1, each one handshake at a time "
                             "(default 4)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="unmeasured handshakes per server and TLS version first "
                             "(default 200)")
    parser.add_argument("--tls", choices=["1.3", "1.2", "both"], default="both")
    parser.add_argument("--nginx", action="store_true",
                        help="also measure nginx, if it is installed")
    parser.add_argument("--nginx-binary", type=Path, default=NGINX,
                        help=f"the nginx to run (default {NGINX})")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE,
                        help=f"JSON results (default {RESULTS_FILE})")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.handshakes < 1 or args.clients < 1 or args.warmup < 0:
        parser.error("--rounds, --handshakes and --clients must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    stopOnTerm()
    checkMachine()
    os.sched_setaffinity(0, {CLIENT_CORE})
    versions = ["1.3", "1.2"] if args.tls == "both" else [args.tls]
    started = time.monotonic()
    notes: list[str] = []
    nginx: Path | None = args.nginx_binary if args.nginx else None
    if nginx is not None and not nginx.exists():
        notes.append(f"nginx skipped: {nginx} is not installed (apt-get install nginx)")
        print(notes[-1])

    pki = TestPKI()
    servers: list[Server] = []
    samples: list[Sample] = []
    load: LoadGenerator | None = None
    memory: dict[str, dict[str, int]] = {}
    work = tempfile.TemporaryDirectory(prefix="kongtls-bench-")
    try:
        leaf = ssl.PEM_cert_to_DER_cert(pki.server.leafPEM)
        # Before any server is started: the client processes are forks of this one.
        load = LoadGenerator(args.clients, ClientFiles(pki.client.certFile,
                                                       pki.client.keyFile, leaf))
        servers = [kongtlsHandshakeServer(pki, Path(work.name)), bareServer(pki, Path(work.name))]
        if nginx is not None and nginx.exists():
            servers.append(handshakeNginx(pki, Path(work.name), nginx))
        for server in servers:
            server.start()
            print(f"{server.label}: pid {' '.join(map(str, server.pids()))} on core "
                  f"{SERVER_CORE}, port {server.port}")
        print(f"client: {args.clients} processes on core {CLIENT_CORE}; {args.rounds} rounds "
              f"of {args.handshakes} handshakes per server and TLS version")

        for tls in versions:
            for server in servers:
                warm = load.run(server.port, tls, args.warmup)
                if args.warmup and not warm.completed:
                    raise RuntimeError(f"{server.label} TLS {tls}: no handshake completed in "
                                       f"warm-up: {dict(warm.errors)}\n{server.logTail()}")

        rssBefore = {server.name: server.rssKiB() for server in servers}
        for roundNo in range(args.rounds):
            for tls in versions:
                shift = roundNo % len(servers)  # who goes first changes every round
                for server in servers[shift:] + servers[:shift]:
                    sample = measure(server, load, tls, roundNo, args.handshakes)
                    samples.append(sample)
                    print(f"round {roundNo + 1}/{args.rounds} TLS {tls} {server.label:<13} "
                          f"{fmt(sample.usPerHandshake):>5} us/hs  {sample.completed} hs, "
                          f"{sum(sample.errors.values())} errors, server busy "
                          f"{100 * sample.serverBusy:.0f}%, client busy "
                          f"{100 * sample.clientBusy:.0f}%")
        for server in servers:
            after = server.rssKiB()
            measured = sum(s.completed for s in samples if s.server == server.name)
            memory[server.name] = {"rss_kib_after_warmup": rssBefore[server.name],
                                   "rss_kib_at_end": after, "handshakes": measured}
            print(f"{server.label}: RSS {rssBefore[server.name]} KiB after warm-up, {after} KiB "
                  f"after {measured} more handshakes")
    finally:
        cleanUp(servers, load.close if load is not None else None, pki.close, work.cleanup)

    summary = summarise(samples, servers, versions)
    printTable(summary, servers)
    for server in servers:
        problems = logProblems(server)
        if problems:
            notes.append(f"{server.label} logged {len(problems)} problem lines "
                         f"(see {server.logPath}); first: {problems[0]}")
            print(notes[-1])
    busy = [s for s in samples if s.serverBusy < 0.8]
    if busy:
        notes.append(f"{len(busy)} of {len(samples)} batches kept their server less than 80% "
                     f"busy (an idle server costs more per handshake); where the client is "
                     f"busier the client core is the limit, else try another --clients")
        print(notes[-1])

    result = {
        "benchmark": "server CPU per full mutual-TLS handshake (ECDSA P-256, no resumption)",
        "date": now(),
        "settings": {
            "rounds": args.rounds, "handshakes": args.handshakes, "clients": args.clients,
            "warmup": args.warmup, "tls": versions,
            "server_core": SERVER_CORE, "client_core": CLIENT_CORE,
            "servers": {s.name: s.argv for s in servers},
        },
        "environment": environment(nginx),
        "summary": summary,
        "memory": memory,
        "samples": [dict(asdict(s), us_per_handshake=s.usPerHandshake,
                         server_busy=s.serverBusy, client_busy=s.clientBusy)
                    for s in samples],
        "notes": notes,
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    writeReport(args.output, result)
    return 0


if __name__ == "__main__":
    run(main)
