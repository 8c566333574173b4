"""Finding plugins: bundled, --plugin NAME=MODULE:ATTR, and the kongtls.plugins
entry-point group."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from twisted.trial.unittest import TestCase

from kongtls.plugins import PluginLoadError, PluginRegistry, parsePluginOption


class LookupTests(TestCase):
    def test_bundled(self) -> None:
        names = PluginRegistry(entryPoints=False).names()
        self.assertIn("client-certificate", names)
        self.assertIn("tls-facts", names)

    def test_command_line_reference(self) -> None:
        name, obj = parsePluginOption("probe=tests.plugins:Probe")
        self.assertEqual(name, "probe")
        registry = PluginRegistry({name: obj}, entryPoints=False)
        self.assertEqual(type(registry.get("probe")).__name__, "Probe")

    def test_bad_references(self) -> None:
        for option, text in [("probe", "NAME=MODULE:ATTR"),
                             ("p=tests.plugins", "MODULE:ATTR"),
                             ("p=no.such.module:X", "cannot import"),
                             ("p=tests.plugins:Nope", "no attribute")]:
            with self.assertRaises(PluginLoadError) as caught:
                parsePluginOption(option)
            self.assertIn(text, str(caught.exception))

    def test_object_without_handlers_is_refused(self) -> None:
        with self.assertRaises(PluginLoadError):
            PluginRegistry({"nothing": object()}, entryPoints=False)

    def test_entry_point_group(self) -> None:
        where = tempfile.mkdtemp(prefix="kongtls-ep-")
        self.addCleanup(shutil.rmtree, where, True)
        with open(os.path.join(where, "kongtls_ep_module.py"), "w") as f:
            f.write("class Handler:\n    def access(self, kong, conf):\n        pass\n")
        info = os.path.join(where, "kongtls_ep_test-1.0.dist-info")
        os.mkdir(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\nName: kongtls-ep-test\nVersion: 1.0\n")
        with open(os.path.join(info, "entry_points.txt"), "w") as f:
            f.write("[kongtls.plugins]\nep-plugin = kongtls_ep_module:Handler\n")
        sys.path.insert(0, where)
        self.addCleanup(sys.path.remove, where)
        registry = PluginRegistry()
        self.assertIn("ep-plugin", registry.names())
        self.assertEqual(type(registry.get("ep-plugin")).__name__, "Handler")
        # --plugin overrides an entry point of the same name
        overridden = PluginRegistry({"ep-plugin": parsePluginOption(
            "x=tests.plugins:Probe")[1]})
        self.assertEqual(type(overridden.get("ep-plugin")).__name__, "Probe")
