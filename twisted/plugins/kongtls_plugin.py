"""The ``twistd kongtls`` plugin; the work is in L{kongtls.cli}."""

from twisted.application.service import ServiceMaker

kongtls = ServiceMaker(
    "kongtls",
    "kongtls.cli",
    "A TLS gateway with Kong's plugin phases and kong.client.tls",
    "kongtls",
)
