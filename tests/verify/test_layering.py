"""fastraft.verify stays outside the node: importing all of it loads no server module (it
observes real processes through the client and the network only)."""

from __future__ import annotations

import subprocess
import sys


def test_verify_never_imports_the_server():
    code = ("import sys, fastraft.verify, fastraft.verify.nemesis, fastraft.verify.__main__; "
            "bad = sorted(m for m in sys.modules if m.startswith('fastraft.server')); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
