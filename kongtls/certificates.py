"""Server certificates: the default one, and the choice of a certificate for an SNI."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from kongtls.config import CertificateEntry, ConfigError


@dataclass(frozen=True)
class KeyedChain:
    """A certificate chain, leaf first, with the leaf's private key."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes


def selfSigned(commonName: str = "localhost") -> KeyedChain:
    """A fresh self-signed ECDSA P-256 certificate, as Kong makes when none is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kongtls")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(commonName),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyedChain((cert,), key)


def loadKeyedChain(certPath: str, keyPath: str) -> KeyedChain:
    """Read a PEM chain and key from files (``--ssl-cert``, ``--ssl-key``)."""
    try:
        with open(certPath, "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        raise ConfigError(certPath, "--ssl-cert", None, f"cannot load certificate: {e}") from None
    try:
        with open(keyPath, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(keyPath, "--ssl-key", None, f"cannot load key: {e}") from None
    return KeyedChain(tuple(chain), key)


@dataclass(frozen=True)
class SessionPolicy:
    """How the server resumes sessions (``--ssl-session-tickets``, ``--ssl-session-cache``)."""

    tickets: bool = True
    cacheSize: int = 0


ContextCustomizer = Callable[[SSL.Context], None]


def buildServerContext(keyed: KeyedChain, sessions: SessionPolicy,
                       customize: ContextCustomizer) -> SSL.Context:
    """A complete server context for one certificate; never changed after use.

    No session-ID context is set on purpose: OpenSSL then refuses to put a session
    that requested a client certificate into its session-ID cache, which is what
    keeps ``disable_session_reuse()`` effective with the cache on.
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate(keyed.chain[0])
    ctx.use_privatekey(keyed.key)  # type: ignore[arg-type]  # refused keys raise
    for extra in keyed.chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.check_privatekey()
    options = SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
    if not sessions.tickets:
        options |= SSL.OP_NO_TICKET
    ctx.set_options(options)
    # Idle connections give their read/write buffers back (as nginx does): about 23 KiB
    # less per idle TLS connection.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_session_cache_mode(
        SSL.SESS_CACHE_SERVER if sessions.cacheSize > 0 else SSL.SESS_CACHE_OFF)
    ctx.set_verify(SSL.VERIFY_NONE)
    customize(ctx)
    return ctx


class CertificateSelector:
    """Server contexts by SNI: exact name, then wildcard, then the default."""

    def __init__(self, default: SSL.Context, exact: dict[str, SSL.Context],
                 wildcards: dict[str, SSL.Context]) -> None:
        self.default = default
        self._exact = exact
        self._wildcards = wildcards

    @classmethod
    def build(cls, defaultChain: KeyedChain, entries: Sequence[CertificateEntry],
              sessions: SessionPolicy, customize: ContextCustomizer) -> CertificateSelector:
        default = buildServerContext(defaultChain, sessions, customize)
        exact: dict[str, SSL.Context] = {}
        wildcards: dict[str, SSL.Context] = {}
        for entry in entries:
            ctx = buildServerContext(KeyedChain(tuple(entry.chain), entry.key), sessions,
                                     customize)
            for sni in entry.snis:
                if sni.startswith("*."):
                    wildcards.setdefault(sni[2:], ctx)
                elif sni.endswith(".*"):
                    wildcards.setdefault(sni, ctx)
                else:
                    exact.setdefault(sni, ctx)
        return cls(default, exact, wildcards)

    def select(self, sni: str | None) -> SSL.Context:
        if not sni:
            return self.default
        ctx = self._exact.get(sni)
        if ctx is not None:
            return ctx
        head, dot, rest = sni.partition(".")
        if dot:
            ctx = self._wildcards.get(rest)
            if ctx is not None:
                return ctx
        head, dot, tail = sni.rpartition(".")
        if dot:
            ctx = self._wildcards.get(head + ".*")
            if ctx is not None:
                return ctx
        return self.default

