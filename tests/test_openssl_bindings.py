"""The private pyOpenSSL bindings kongtls relies on: fail loudly if one disappears."""

from __future__ import annotations

from OpenSSL import SSL
from OpenSSL._util import lib
from twisted.trial.unittest import TestCase

from kongtls import _openssl
from kongtls.certificates import SessionPolicy, buildServerContext, selfSigned


class BindingsTests(TestCase):
    def test_every_binding_is_there(self) -> None:
        missing = [n for n in _openssl.REQUIRED_BINDINGS if not hasattr(lib, n)]
        self.assertEqual(missing, [], "pyOpenSSL no longer binds these; see kongtls/_openssl.py")

    def test_ca_names_install_and_clear(self) -> None:
        ctx = buildServerContext(selfSigned(), SessionPolicy(), lambda c: None)
        names = [selfSigned("a.example").chain[0].subject,
                 selfSigned("b.example").chain[0].subject]
        conn = SSL.Connection(ctx, None)
        self.assertEqual(_openssl.clientCANameCount(conn), 0)
        _openssl.CANameList(names).install(ctx)
        self.assertEqual(_openssl.clientCANameCount(conn), 2)
        _openssl.clearClientCAList(ctx)
        self.assertEqual(_openssl.clientCANameCount(conn), 0)

    def test_session_reused_on_a_fresh_connection_is_false(self) -> None:
        ctx = buildServerContext(selfSigned(), SessionPolicy(), lambda c: None)
        self.assertFalse(_openssl.sessionReused(SSL.Connection(ctx, None)))

    def test_buffered_bytes_counts_what_waits_in_a_bio(self) -> None:
        client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        client.set_connect_state()
        self.assertEqual(_openssl.bufferedBytes(client._from_ssl), 0)
        with self.assertRaises(SSL.WantReadError):
            client.do_handshake()  # the ClientHello is written to the BIO
        waiting = _openssl.bufferedBytes(client._from_ssl)
        self.assertGreater(waiting, 0)
        self.assertEqual(len(client.bio_read(65536)), waiting)
        self.assertEqual(_openssl.bufferedBytes(client._from_ssl), 0)
