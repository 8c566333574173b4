"""The built-in demo: what ``twistd -n kongtls`` serves when given no config.

An echo service on an ephemeral loopback port, one route ``/`` to it, the bundled
``client-certificate`` plugin (asks for, but does not require, a certificate) and the
``tls-facts`` plugin (hands the TLS facts to the echo service as headers).
"""

from __future__ import annotations

from typing import Any


def demoDocument(echoPort: int) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{
            "name": "demo-echo",
            "url": f"http://127.0.0.1:{echoPort}",
            "routes": [{"name": "demo", "paths": ["/"], "strip_path": False}],
        }],
        "plugins": [
            {"name": "client-certificate", "config": {"disable_session_reuse": True}},
            {"name": "tls-facts"},
        ],
    }
