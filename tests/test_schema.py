"""Plugin config schemas: defaults filled in, bad values refused with the field named."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from kongtls.config import ConfigError, parseConfig
from kongtls.plugins import PluginRegistry
from kongtls.schema import SchemaError, applySchema
from kongtls.testing import fetch
from tests.support import GatewayTestCase

SCHEMA = {
    "realm": {"type": "string", "default": "kong"},
    "limit": {"type": "integer", "required": True, "between": [1, 100]},
    "mode": {"type": "string", "one_of": ["strict", "lenient"], "default": "strict"},
    "names": {"type": "array", "elements": "string", "default": []},
    "ratio": {"type": "number"},
    "on": {"type": "boolean", "default": False},
}


class Limited:
    SCHEMA = SCHEMA

    def access(self, kong: Any, conf: Any) -> None:
        kong.response.exit(200, conf)


class ApplySchemaTests(TestCase):
    def test_defaults_filled(self) -> None:
        self.assertEqual(applySchema(SCHEMA, {"limit": 5}),
                         {"realm": "kong", "limit": 5, "mode": "strict", "names": [],
                          "on": False})

    def test_refusals(self) -> None:
        cases = [
            ({}, "config.limit", "required field missing"),
            ({"limit": "5"}, "config.limit", "expected an integer, got a string"),
            ({"limit": True}, "config.limit", "expected an integer, got a boolean"),
            ({"limit": 500}, "config.limit", "between 1 and 100"),
            ({"limit": 5, "mode": "x"}, "config.mode", "one of"),
            ({"limit": 5, "names": ["a", 1]}, "config.names[1]", "expected a string"),
            ({"limit": 5, "colour": "red"}, "config.colour", "unknown field"),
        ]
        for conf, fieldName, text in cases:
            with self.assertRaises(SchemaError) as caught:
                applySchema(SCHEMA, conf)
            self.assertEqual(caught.exception.field, fieldName)
            self.assertIn(text, caught.exception.problem)

    def test_defaults_are_not_shared(self) -> None:
        first = applySchema(SCHEMA, {"limit": 1})
        first["names"].append("x")
        self.assertEqual(applySchema(SCHEMA, {"limit": 1})["names"], [])


class ConfigSchemaTests(GatewayTestCase):
    def test_error_names_plugin_and_field(self) -> None:
        registry = PluginRegistry({"limited": Limited}, entryPoints=False)
        with self.assertRaises(ConfigError) as caught:
            parseConfig({"_format_version": "3.0",
                         "plugins": [{"name": "limited", "config": {"limit": "x"}}]},
                        "kong.yml", registry)
        self.assertEqual(str(caught.exception),
                         "kong.yml: plugins[0] (plugin 'limited'): field 'config.limit': "
                         "expected an integer, got a string")

    def test_bundled_plugin_schema(self) -> None:
        registry = PluginRegistry(entryPoints=False)
        with self.assertRaises(ConfigError) as caught:
            parseConfig({"_format_version": "3.0", "plugins": [
                {"name": "client-certificate", "config": {"require": "yes"}}]},
                "kong.yml", registry)
        self.assertIn("config.require", str(caught.exception))

    async def test_handler_gets_defaults(self) -> None:
        gw = await self.gateway([{"name": "limited", "config": {"limit": 3}}],
                                {"limited": Limited})
        conf = (await fetch(gw.httpsPort, "/", pki=self.pki)).json()
        self.assertEqual(conf["realm"], "kong")
        self.assertEqual(conf["limit"], 3)
