"""Which core is in use, and the guard against an install that silently fell back to the twin.

The suite imports the *installed* package (pytest runs in importlib mode), so these tests see
what a user gets after ``pip install .``.
"""

import os
import subprocess
import sys

import fastraft
import fastraft.core as core

NO_EXT = bool(os.environ.get("FASTRAFT_NO_EXTENSIONS"))


def test_no_silent_fallback_to_the_twin():
    """With a compiler present, `pip install .` must have built fastraft._core; landing on the
    twin without FASTRAFT_NO_EXTENSIONS=1 means the build failed quietly."""
    if NO_EXT:
        assert core.IMPLEMENTATION == "python"
        return
    assert core.IMPLEMENTATION == "cython", (
        "fastraft.core fell back to the pure-Python twin although FASTRAFT_NO_EXTENSIONS is "
        f"not set: the extension did not build or import (package at {fastraft.__file__})")


def test_core_names_come_from_the_chosen_module():
    expected = "fastraft._core_py" if core.IMPLEMENTATION == "python" else "fastraft._core"
    assert core.LogRing.__module__ == expected
    assert core.FrameDecoder.__module__ == expected


def test_environment_variable_forces_the_twin_at_import():
    env = dict(os.environ, FASTRAFT_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", "import fastraft.core as c; print(c.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, check=True, cwd=os.path.dirname(__file__))
    assert out.stdout.strip() == "python"


def test_cli_version_and_info(tmp_path):
    # Run outside the checkout: `python -m` puts the working directory first on sys.path,
    # and the bare sources there (without the compiled core) would shadow the install.
    out = subprocess.run([sys.executable, "-m", "fastraft", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"fastraft {fastraft.__version__}"
    out = subprocess.run([sys.executable, "-m", "fastraft", "info", "--json"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert f'"core": "{core.IMPLEMENTATION}"' in out.stdout
