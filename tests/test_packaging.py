"""The wheel and sdist build; the wheel, installed in a fresh virtual environment and
run from outside the checkout, finds its twistd plugin and serves a request."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile

from kongtls.testing import curl, run
from tests.support import ChildProcess, GatewayTestCase, freePort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PackagingTests(GatewayTestCase):
    timeout = 600

    async def test_wheel_installs_and_serves(self) -> None:
        work = tempfile.mkdtemp(prefix="kongtls-pkg-")
        self.addCleanup(shutil.rmtree, work, True)
        dist = os.path.join(work, "dist")
        built = await run(sys.executable, ["-m", "build", "--sdist", "--wheel",
                                           "--outdir", dist, ROOT])
        self.assertEqual(built.code, 0, built.out + built.err)
        [wheel] = glob.glob(os.path.join(dist, "kongtls-*.whl"))
        self.assertEqual(len(glob.glob(os.path.join(dist, "kongtls-*.tar.gz"))), 1)

        venv = os.path.join(work, "venv")
        made = await run(sys.executable, ["-m", "venv", venv])
        self.assertEqual(made.code, 0, made.err)
        bin_ = os.path.join(venv, "bin")
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        installed = await run(os.path.join(bin_, "pip"), ["install", "-q", wheel], env=env)
        self.assertEqual(installed.code, 0, installed.out + installed.err)

        where = await run(os.path.join(bin_, "python"),
                          ["-c", "import kongtls; print(kongtls.__file__)"], env=env,
                          cwd=work)
        self.assertTrue(where.out.strip().startswith(venv), where.out)
        helped = await run(os.path.join(bin_, "twistd"), ["kongtls", "--help"], env=env, cwd=work)
        self.assertIn("--ssl-session-tickets", helped.out, helped.err)

        https = freePort()
        child = ChildProcess([os.path.join(bin_, "twistd"), "-n", "--pidfile=", "kongtls",
                              "--https", f"tcp:{https}:interface=127.0.0.1",
                              "--http", f"tcp:{freePort()}:interface=127.0.0.1"],
                             env, work)
        self.addCleanup(child.stop)
        await child.waitForPort(https)
        answer = await curl("-k", f"https://127.0.0.1:{https}/from-the-wheel")
        self.assertEqual(json.loads(answer.out)["path"], "/from-the-wheel")
