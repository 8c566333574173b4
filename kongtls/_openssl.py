"""The few OpenSSL calls pyOpenSSL does not expose publicly, in one place.

pyOpenSSL has no per-connection client CA list, so the CA names that
``request_client_certificate(ca_certs)`` sends are put on the connection's current
context for the moment its CertificateRequest is written, and taken off again right
after (the whole server flight is written inside one ``do_handshake`` call, so no other
connection can see them). ``tests/test_openssl_bindings.py`` fails loudly if a binding
used here disappears from pyOpenSSL.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

REQUIRED_BINDINGS = (
    "SSL_CTX_set_client_CA_list",
    "sk_X509_NAME_new_null",
    "sk_X509_NAME_push",
    "sk_X509_NAME_num",
    "d2i_X509_NAME",
    "SSL_get_client_CA_list",
    "SSL_session_reused",
    "BIO_get_mem_data",
)


class CANameList:
    """DER subject names, ready to be installed as a context's client CA list."""

    __slots__ = ("ders",)

    def __init__(self, names: Sequence[x509.Name]) -> None:
        self.ders = tuple(name.public_bytes() for name in names)

    def _stack(self) -> object:
        stack = _lib.sk_X509_NAME_new_null()
        if stack == _ffi.NULL:
            raise MemoryError("sk_X509_NAME_new_null")
        for der in self.ders:
            buf = _ffi.new("unsigned char[]", der)
            ptr = _ffi.new("unsigned char **", buf)
            name = _lib.d2i_X509_NAME(_ffi.NULL, ptr, len(der))
            if name == _ffi.NULL:
                raise ValueError("d2i_X509_NAME failed")
            _lib.sk_X509_NAME_push(stack, name)
        return stack

    def install(self, context: SSL.Context) -> None:
        """Make these the names C{context} sends in CertificateRequest."""
        _lib.SSL_CTX_set_client_CA_list(context._context, self._stack())


def clearClientCAList(context: SSL.Context) -> None:
    """Send no CA names from C{context} (the state every context is built in)."""
    _lib.SSL_CTX_set_client_CA_list(context._context, _ffi.NULL)


def clientCANameCount(connection: SSL.Connection) -> int:
    """How many CA names C{connection} would send now (for tests)."""
    names = _lib.SSL_get_client_CA_list(connection._ssl)
    return 0 if names == _ffi.NULL else int(_lib.sk_X509_NAME_num(names))


def sessionReused(connection: SSL.Connection) -> bool:
    """Whether C{connection}'s handshake resumed a session (no public pyOpenSSL call)."""
    return bool(_lib.SSL_session_reused(connection._ssl))


def bufferedBytes(bio: object) -> int:
    """How many bytes wait in one of a connection's memory BIOs (C{_into_ssl} holds
    what the peer sent, not yet decrypted; C{_from_ssl} what OpenSSL wrote, not yet
    sent). Knowing it saves a read that can only fail with C{WantReadError}."""
    return int(_lib.BIO_get_mem_data(bio, _ffi.NULL))

