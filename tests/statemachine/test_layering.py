"""Architecture checks of fastraft.statemachine: deterministic modules import no IO and no
msgpack; only the snapshotter may use os, fork and asyncio, and the storage layer (its
snapshot files); no module imports the server (the SQLite machine is handed its store).

Place in the architecture: tests of the package layout (like tests/unit/test_sourcecode.py).
"""

from __future__ import annotations

import ast
import pathlib

import fastraft.statemachine

PKG = pathlib.Path(fastraft.statemachine.__file__).parent
FORBIDDEN = {"asyncio", "socket", "msgpack", "os", "time", "threading", "subprocess",
             "selectors", "uvloop", "random"}


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _fastraft_imports(path: pathlib.Path) -> set[str]:
    """The fastraft subpackages a module imports (``..storage`` -> ``storage``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("fastraft."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("fastraft."))
    return names


def test_deterministic_modules_import_no_io():
    checked = 0
    for path in sorted(PKG.glob("*.py")):
        if path.name == "snapshotter.py":
            assert "msgpack" not in _imports(path)
            continue
        bad = _imports(path) & FORBIDDEN
        assert not bad, f"{path.name} imports {sorted(bad)}"
        checked += 1
    assert checked == 7     # kv, sessions, leases, machine, restorer, sqlite_machine, __init__


def test_only_the_snapshotter_imports_the_storage_layer_and_none_the_server():
    for path in sorted(PKG.glob("*.py")):
        forbidden = {"server", "client", "cli", "launcher"}
        if path.name != "snapshotter.py":
            forbidden.add("storage")
        bad = _fastraft_imports(path) & forbidden
        assert not bad, f"{path.name} imports fastraft.{sorted(bad)}"


def test_modules_stay_small():
    for path in PKG.glob("*.py"):
        assert len(path.read_text().splitlines()) < 650, path.name
