"""Shared test configuration: the two core implementations, slow tests and hypothesis settings.

Place in the architecture: test infrastructure only; no fastraft module imports it.

- ``core_impl``: every core test runs once per implementation of the core, the pure-Python twin
  ``fastraft._core_py`` (id ``python``) and the Cython extension ``fastraft._core`` (id
  ``cython``), the way aiohttp parametrizes its tests over ``REQUEST_PARSERS``. The cython
  variant is skipped only when ``FASTRAFT_NO_EXTENSIONS`` is set; otherwise an extension that
  does not import is a test failure, never a silent skip (a broken build must not pass CI).
- ``core_twins``: both modules at once, for the cross-implementation checks (same policy).
- ``@pytest.mark.requires_core("cython")``: the same policy for tests that cannot take a fixture
  (hypothesis ``RuleBasedStateMachine.TestCase`` classes).
- ``--run-slow`` enables the tests marked ``slow``; they are skipped otherwise.
- Hypothesis: the ``ci`` profile (no deadline, 200 examples) is loaded by default, so the core
  suite stays fast on both implementations. ``--hypothesis-profile=thorough`` runs 10x more.
  Runs are not derandomized; a failure prints the reproducing blob (``print_blob``) and
  ``--hypothesis-seed`` replays a run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=200, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=2000, print_blob=True)
# Loaded when pytest imports this conftest, before the hypothesis plugin applies the command
# line, so ``--hypothesis-profile`` / ``--hypothesis-verbosity`` still override it.
settings.load_profile("ci")

# The shared helpers, importable by name from any test module: polling (waiting.py) and
# encoded log commands / random logs (commandlog.py).
for _name, _file in (("fastraft_test_waiting", "waiting.py"),
                     ("fastraft_test_commandlog", "commandlog.py")):
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, Path(__file__).parent / _file)
        sys.modules[_name] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules[_name])

#: Test id -> module name of each implementation of the core.
CORE_MODULES = {
    "python": "fastraft._core_py",
    "cython": "fastraft._core",
}


def load_core(name: str):
    """Import the core implementation ``name`` (a key of CORE_MODULES) or skip/fail the test.

    Only the extension can be missing on purpose (FASTRAFT_NO_EXTENSIONS set: skip); an
    extension that fails to import otherwise fails the test with the import error."""
    module_name = CORE_MODULES[name]
    if name == "cython" and os.environ.get("FASTRAFT_NO_EXTENSIONS"):
        pytest.skip("FASTRAFT_NO_EXTENSIONS is set: the Cython core is not under test")
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        error = exc
    pytest.fail(
        f"cannot import the {name} core {module_name!r}: {error!r}. Build the extension "
        "(pip install -e . or python setup.py build_ext --inplace), or set "
        "FASTRAFT_NO_EXTENSIONS=1 to test the pure-Python twin only.",
        pytrace=False,
    )


# Session scope: a module object is immutable test input, and hypothesis tests may take it
# without tripping the function-scoped-fixture health check. A skip or failure raised here is
# cached by pytest and reported again for every test that uses the fixture.
@pytest.fixture(scope="session", params=list(CORE_MODULES), ids=list(CORE_MODULES))
def core_impl(request):
    """The core module under test: ``fastraft._core_py`` or ``fastraft._core``."""
    return load_core(request.param)


@pytest.fixture(scope="session")
def core_twins():
    """``(python_module, cython_module)``, for tests that compare the implementations."""
    return load_core("python"), load_core("cython")


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow", action="store_true", default=False,
        help="also run the tests marked slow (long hypothesis runs)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires_core(name): the test needs the core implementation `name` ('python' or "
        "'cython'); skipped or failed exactly like the core_impl fixture")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


def pytest_runtest_setup(item):
    for marker in item.iter_markers("requires_core"):
        load_core(*marker.args)
