"""What ``bench/handshake_cpu.py`` and ``bench/proxy_bench.py`` share: the servers under
test as pinned subprocesses, their CPU and memory from ``/proc``, the kongtls and nginx
command lines, TLS client contexts, medians and ratios, and the report's environment.

Imported as ``_common`` (the scripts' directory is first on ``sys.path``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kongtls.testing import TestPKI

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BIN_DIR = Path(sys.executable).parent
NGINX = Path("/usr/sbin/nginx")

SERVER_CORE = 0
CLIENT_CORE = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


# -- processes ------------------------------------------------------------------------


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _processTimes(pid: int) -> float:
    """utime + stime of process C{pid} (all its threads, dead ones too), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    """C{pid} and every process below it."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def pinned(core: int) -> list[str]:
    """A command prefix that runs a program (and all its threads) on C{core} only."""
    taskset = shutil.which("taskset")
    if taskset is None:
        raise SystemExit("taskset (util-linux) is needed to pin the servers")
    return [taskset, "-c", str(core)]


@dataclass
class Server:
    """One server under test, as a subprocess (its own process group) on C{core}.

    Its output goes to C{logDir}/C{name}.log; a restart appends to the first start's log.
    """

    name: str
    label: str
    argv: list[str]
    port: int
    logDir: Path
    cwd: str | None = None
    core: int = SERVER_CORE
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    logPath: Path | None = None
    _log: Any = None

    def start(self, timeout: float = 30.0) -> None:
        self.logDir.mkdir(parents=True, exist_ok=True)
        self.logPath = self.logDir / f"{self.name}.log"
        # closed in stop(); a restart appends to the first start's log
        self._log = open(self.logPath, "ab" if self.proc is not None else "wb")
        self.proc = subprocess.Popen(pinned(self.core) + self.argv, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} at start; "
                                   f"log:\n{self.logTail()}")
            if listening(self.port):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} is not listening on {self.port} after "
                                   f"{timeout}s; log:\n{self.logTail()}")
            time.sleep(0.05)
        for pid in self.pids():
            affinity = os.sched_getaffinity(pid)
            if affinity != {self.core}:
                raise RuntimeError(f"{self.label} pid {pid} runs on cores {affinity}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensureRunning(self, notes: list[str]) -> None:
        """Start it again if something (another user's test run?) stopped it."""
        if self.alive():
            return
        code = self.proc.returncode if self.proc is not None else None
        notes.append(f"{self.label} had exited ({code}) and was restarted; log tail: "
                     f"{self.logTail(3)!r}")
        print(notes[-1])
        self.restarts += 1
        self.stop()
        self.start()

    def measure(self, notes: list[str], what: Callable[..., T], *args: Any,
                **kwargs: Any) -> T:
        """C{what(*args, **kwargs)}, again (after a restart) if this server died meanwhile."""
        for _ in range(3):
            self.ensureRunning(notes)
            assert self.proc is not None
            pid = self.proc.pid
            result = what(*args, **kwargs)
            if self.alive() and self.proc.pid == pid:
                return result
            notes.append(f"{self.label} exited during a measurement, which was repeated")
            print(notes[-1])
        raise RuntimeError(f"{self.label} keeps exiting; log:\n{self.logTail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        assert self.proc is not None
        return descendants(self.proc.pid)

    def cpuSeconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += _processTimes(pid)
            except FileNotFoundError:
                pass
        return total

    def status(self, key: str) -> int:
        """A /proc/PID/status figure (VmRSS, VmHWM) in KiB, summed over the processes."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total

    def rssKiB(self) -> int:
        """Resident memory of the server's processes (a leak per handshake shows here)."""
        return self.status("VmRSS")

    def resetPeak(self) -> None:
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
            except OSError:
                pass

    def openFiles(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                pass
        return total

    def settle(self, quiet: float = 0.02, step: float = 0.5, limit: float = 30.0) -> float:
        """Wait until it uses less than C{quiet} CPU seconds per C{step}; the time waited."""
        t0 = time.monotonic()
        last = self.cpuSeconds()
        while time.monotonic() - t0 < limit:
            time.sleep(step)
            now = self.cpuSeconds()
            if now - last < quiet:
                break
            last = now
        return time.monotonic() - t0

    def logTail(self, lines: int = 30) -> str:
        if self.logPath is None or not self.logPath.exists():
            return ""
        return "\n".join(self.logPath.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pgid = self.proc.pid  # start_new_session: the group is this process's own
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


def stopAll(servers: Sequence[Server]) -> None:
    """Stop every server, in this order, whatever one of them does."""
    for server in servers:
        try:
            server.stop()
        except Exception as e:  # the others must still be stopped
            print(f"cannot stop {server.label}: {e}", file=sys.stderr)


def kongtlsServer(pki: TestPKI, work: Path, logDir: Path,
                  document: dict[str, Any]) -> Server:
    """``twistd kongtls`` with declarative C{document}, TLS on a free port, no tickets."""
    port = freePort()
    conf = work / "kong.yml"
    conf.write_text(yaml.safe_dump(document, sort_keys=False))
    argv = [str(BIN_DIR / "twistd"), "-n", "--pidfile=", "kongtls", "--config", str(conf),
            "--https", f"tcp:{port}:interface=127.0.0.1",
            "--ssl-cert", pki.server.certFile, "--ssl-key", pki.server.keyFile,
            "--ssl-session-tickets", "off"]
    return Server("kongtls", "kongtls", argv, port, logDir, cwd=str(work))


# The pieces of the nginx configurations: one master, one worker, all in the temp dir.
# {limits} is "" or a worker_rlimit_nofile line; {listen} what follows "ssl" on listen.
NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes 1;
{limits}pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections {connections}; }}
"""

NGINX_TEMP_PATHS = """\
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
"""

# What kongtls's server does too: ask for a client certificate without requiring one;
# no session tickets or cache.
NGINX_TLS = """\
        listen 127.0.0.1:{port} ssl{listen};
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client optional_no_ca;
        ssl_session_tickets off;
        ssl_session_cache off;
"""


def nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def nginxServer(name: str, label: str, template: str, work: Path, logDir: Path,
                core: int = SERVER_CORE, binary: Path = NGINX, **values: Any) -> Server:
    """An nginx with C{template} formatted with its home C{dir}, C{port} and C{values}."""
    port = freePort()
    home = work / name
    home.mkdir()
    conf = home / "nginx.conf"
    conf.write_text(template.format(dir=home, port=port, **values))
    argv = [str(binary), "-p", str(home), "-e", "stderr", "-c", str(conf)]
    return Server(name, label, argv, port, logDir, cwd=str(home), core=core)


# -- clients --------------------------------------------------------------------------


def clientContext(certFile: str, keyFile: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    """Only C{version}, presenting C{certFile}, never offering a session ticket.

    The server's certificate is not verified here: an ECDSA verification less per
    handshake on the client's core, which has to keep up with the server's.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(certFile, keyFile)
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


# -- report ---------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def logProblems(server: Server) -> list[str]:
    marks = ("Traceback", "Unhandled", "[error]", "[crit]", "[alert]", "[emerg]", "Error")
    return [line for line in server.logTail(100_000).splitlines()
            if any(m in line for m in marks)]


def environment(nginx: Path | None) -> dict[str, Any]:
    import cryptography
    import OpenSSL
    from OpenSSL import SSL

    import twisted

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "pyOpenSSL": OpenSSL.__version__,
        "cryptography": cryptography.__version__,
        "server_openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(),
        "client_openssl": ssl.OPENSSL_VERSION,
        "kernel": platform.release(),
        "cpu": _cpuModel(),
    }
    if nginx is not None and nginx.exists():
        version = subprocess.run([str(nginx), "-v"], capture_output=True, text=True)
        env["nginx"] = version.stderr.strip()
    return env


def _cpuModel() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- main -----------------------------------------------------------------------------


def checkMachine() -> None:
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, CLIENT_CORE} <= cores:
        raise SystemExit(f"cores {SERVER_CORE} and {CLIENT_CORE} are needed; "
                         f"this process may use {sorted(cores)}")
    if len(cores) > 2:
        print(f"note: {len(cores)} cores; only {SERVER_CORE} (servers) and {CLIENT_CORE} "
              f"(client) are used")


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cleanUp(servers: Sequence[Server], *closers: Callable[[], object] | None) -> None:
    """Stop the servers, then call the C{closers} (None: skipped), ^C and SIGTERM ignored.

    No second ^C (or a process-group SIGINT arriving twice) may cut the clean-up short.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stopAll(servers)
    for close in closers:
        if close is not None:
            close()
    signal.signal(signal.SIGINT, previous)


def now() -> str:
    """The report's date: UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def writeReport(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path} in {report['duration_seconds']} s")


def stopOnTerm() -> None:
    """Make SIGTERM a KeyboardInterrupt, so that the servers are stopped on kill too."""
    signal.signal(signal.SIGTERM, _interrupted)


def run(main: Callable[[], int]) -> None:
    """Exit with C{main()}'s status, or 130 with a word after ^C or SIGTERM."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; the servers and client processes were stopped\n")
        sys.exit(130)
