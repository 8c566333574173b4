"""README.rst and bench/README.rst are valid reStructuredText, and README opens with the
two commands for a fresh machine (the second being what .ci/run runs)."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DocsTests(TestCase):
    def test_rst_is_valid(self) -> None:
        import docutils.core
        import docutils.utils

        for name in ("README.rst", os.path.join("bench", "README.rst")):
            with open(os.path.join(ROOT, name)) as f:
                text = f.read()
            try:
                docutils.core.publish_doctree(text, settings_overrides={
                    "report_level": 5, "halt_level": 2})
            except docutils.utils.SystemMessage as e:
                self.fail(f"{name}: {e}")

    def test_two_commands_first_and_ci_runs_the_second(self) -> None:
        with open(os.path.join(ROOT, "README.rst")) as f:
            readme = f.read()
        block = readme.split(".. code-block:: sh", 1)[1].split("\nTry the demo", 1)[0]
        commands = [ln.strip() for ln in block.splitlines() if ln.strip() and
                    not ln.strip().startswith("#")]
        self.assertEqual(len(commands), 2)
        self.assertIn("twistd -n kongtls", commands[0])
        with open(os.path.join(ROOT, ".ci", "run")) as f:
            self.assertIn(commands[1], f.read())
