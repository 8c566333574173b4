"""The declarative file: what is accepted, and one clear line for what is not."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from kongtls.config import ConfigError, loadConfig, parseConfig
from kongtls.plugins import PluginRegistry
from tests.support import sharedPKI


def doc(**parts: Any) -> dict[str, Any]:
    return {"_format_version": "3.0", **parts}


SERVICE = {"name": "s", "url": "http://127.0.0.1:9/base"}


class AcceptedTests(TestCase):
    def test_nested_and_top_level_entities(self) -> None:
        pki = sharedPKI()
        config = parseConfig(doc(
            services=[{**SERVICE, "routes": [{"name": "r1", "paths": ["/a"],
                                              "plugins": [{"name": "p"}]}],
                       "plugins": [{"name": "p", "config": {"x": 1}}]},
                      {"name": "t", "host": "example.com", "port": 8080, "path": "/x"}],
            routes=[{"name": "r2", "hosts": ["Example.COM"], "service": "t"},
                    {"name": "r3", "snis": ["a.example.com"], "service": {"name": "s"}}],
            plugins=[{"name": "p"}, {"name": "p", "route": "r2"}],
            certificates=[{"cert": pki.server.fullChainPEM, "key": pki.server.keyPEM.decode(),
                           "snis": ["a.example.com", {"name": "*.b.example.com"}]}],
            ca_certificates=[{"id": "root", "cert": pki.caPEM(pki.root)}],
        ))
        self.assertEqual([s.name for s in config.services], ["s", "t"])
        self.assertEqual(config.services[1].url, "http://example.com:8080/x")
        self.assertEqual(config.services[0].path, "/base")
        self.assertEqual([r.name for r in config.routes], ["r1", "r2", "r3"])
        self.assertEqual(config.routes[1].hosts, ("example.com",))
        self.assertIs(config.routes[2].service, config.services[0])
        self.assertEqual(len(config.allPlugins()), 4)
        self.assertEqual(config.certificates[0].snis, ("a.example.com", "*.b.example.com"))
        self.assertEqual(len(config.certificates[0].chain), 1)


class RefusedTests(TestCase):
    def refused(self, document: Any, *expected: str, plugins: bool = False) -> str:
        known = PluginRegistry(entryPoints=False) if plugins else None
        with self.assertRaises(ConfigError) as caught:
            parseConfig(document, "kong.yml", known)
        message = str(caught.exception)
        self.assertTrue(message.startswith("kong.yml: "), message)
        self.assertNotIn("\n", message)
        for text in expected:
            self.assertIn(text, message)
        return message

    def test_missing_format_version(self) -> None:
        self.refused({"services": []}, "_format_version")

    def test_unknown_top_field(self) -> None:
        self.refused(doc(servces=[]), "servces", "unknown field")

    def test_unknown_service_field(self) -> None:
        self.refused(doc(services=[{**SERVICE, "colour": "red"}]), "service 's'", "colour")

    def test_bad_url(self) -> None:
        self.refused(doc(services=[{"name": "s", "url": "nope"}]), "service 's'", "'url'")

    def test_duplicate_service(self) -> None:
        self.refused(doc(services=[SERVICE, SERVICE]), "duplicate service name")

    def test_route_without_service(self) -> None:
        self.refused(doc(routes=[{"name": "r", "paths": ["/"]}]), "route 'r'", "'service'")

    def test_route_to_unknown_service(self) -> None:
        self.refused(doc(routes=[{"name": "r", "paths": ["/"], "service": "zz"}]),
                     "no service named 'zz'")

    def test_paths_wrong_type(self) -> None:
        self.refused(doc(services=[{**SERVICE, "routes": [{"name": "r", "paths": "/"}]}]),
                     "route 'r'", "'paths'", "list")

    def test_plugin_in_two_same_scopes(self) -> None:
        self.refused(doc(plugins=[{"name": "p"}, {"name": "p"}]), "plugins[1]",
                     "already configured")

    def test_unknown_plugin(self) -> None:
        self.refused(doc(plugins=[{"name": "nobody"}]), "plugins[0]", "'name'",
                     "no plugin named 'nobody'", plugins=True)

    def test_plugin_config_not_a_mapping(self) -> None:
        self.refused(doc(plugins=[{"name": "p", "config": [1]}]), "'config'")

    def test_enabled_not_boolean(self) -> None:
        self.refused(doc(plugins=[{"name": "p", "enabled": "yes"}]), "'enabled'")

    def test_bad_pem(self) -> None:
        self.refused(doc(certificates=[{"cert": "junk", "key": "junk"}]),
                     "certificates[0]", "'cert'")

    def test_key_not_matching_certificate(self) -> None:
        pki = sharedPKI()
        self.refused(doc(certificates=[{"id": "c", "cert": pki.server.fullChainPEM,
                                        "key": pki.client.keyPEM.decode()}]),
                     "certificate 'c'", "'key'", "does not match")

    def test_file_errors_name_the_file(self) -> None:
        fd, path = tempfile.mkstemp(suffix=".yml")
        os.write(fd, b"services: [\n")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        with self.assertRaises(ConfigError) as caught:
            loadConfig(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("not valid YAML", str(caught.exception))
        with self.assertRaises(ConfigError) as missing:
            loadConfig(path + ".missing")
        self.assertIn("cannot read", str(missing.exception))
