"""Architecture checks on the source tree (uvloop keeps such checks as ordinary tests).

- fastraft/raft/ (the sans-IO engine) and the core never import IO modules;
- msgpack is imported only by fastraft/codec/_msgpack.py;
- every module opens with a docstring that states its place.
"""

import ast
import pathlib

import fastraft

PKG = pathlib.Path(fastraft.__file__).parent
IO_MODULES = {"asyncio", "socket", "os", "time", "msgpack", "uvloop", "selectors", "threading",
              "subprocess", "io", "sqlite3"}
NO_IO = ["_core_py.py", "_core.pyx", "errors.py", "raft"]


def _imports(path: pathlib.Path) -> set[str]:
    if path.suffix == ".pyx":  # not Python syntax; look at the plain import lines
        names = set()
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from", "cimport"):
                names.add(words[1].split(".")[0])
        return names
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _sources():
    return sorted(p for p in PKG.rglob("*") if p.suffix in (".py", ".pyx"))


def test_sans_io_layers_import_no_io():
    checked = 0
    for entry in NO_IO:
        target = PKG / entry
        paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in paths:
            if not path.exists():
                continue
            checked += 1
            bad = _imports(path) & IO_MODULES
            assert not bad, f"{path.relative_to(PKG)} imports IO modules {sorted(bad)}"
    assert checked >= 3


MSGPACK_MODULE = PKG / "codec" / "_msgpack.py"


def test_msgpack_only_in_codec():
    assert "msgpack" in _imports(MSGPACK_MODULE)
    for path in _sources():
        if path == MSGPACK_MODULE:
            continue
        assert "msgpack" not in _imports(path), f"{path.relative_to(PKG)} imports msgpack"


def test_codec_package_offers_every_name():
    """fastraft.codec was one module: the package re-exports all it offered (its __all__,
    plus the names other modules and the tests reach), each the submodule's own object."""
    from fastraft import codec
    from fastraft.codec import _msgpack, client, commands, peer

    assert not (PKG / "codec.py").exists()
    assert len(codec.__all__) == len(set(codec.__all__)) == 91
    for name in codec.__all__ + ["MAX_ADDRESS", "InvalidRequest", "RemoteProtocolError",
                                 "_unpackb", "_decode_request", "_decode_command"]:
        assert hasattr(codec, name), name
    homes = [_msgpack, client, commands, peer]
    for name in codec.__all__:
        owners = [m for m in homes if name in vars(m) and vars(m)[name] is getattr(codec, name)]
        assert owners, f"codec.{name} is defined in no submodule"


def test_codec_hot_paths_bind_module_globals():
    """decode_request's and decode_command's fast paths read their helpers as globals of
    their own module (not through the package): each name they use is defined there."""
    import builtins
    import dis

    from fastraft.codec import client, commands

    for mod, fn in ((client, client.decode_request), (commands, commands.decode_command)):
        assert fn.__globals__ is vars(mod)
        names = {i.argval for i in dis.get_instructions(fn) if i.opname == "LOAD_GLOBAL"}
        assert {"_unpackb", "_int", "_bytes", "_list", "_U64"} <= names
        for name in names:
            assert name in vars(mod) or hasattr(builtins, name), \
                f"{mod.__name__}.{fn.__name__} reads {name}, not a global of its module"


def test_every_module_has_a_docstring():
    for path in _sources():
        if path.suffix == ".pyx":  # directives comment first, then the docstring
            assert '"""' in path.read_text()[:200], f"{path.name} lacks a module docstring"
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.relative_to(PKG)} lacks a module docstring"


# -- the engine is sealed behind RawNode ------------------------------------------------------

#: Engine modules whose insides only fastraft/raft/ itself may use; the rest of the package
#: goes through ``fastraft.raft`` (RawNode, Ready, Status, the message vocabulary). The
#: simulator's invariant checker is white-box on purpose and is the one exception.
ENGINE_INTERNALS = {"fastraft.raft.raft", "fastraft.raft.log", "fastraft.raft.progress",
                    "fastraft.raft.rawnode"}
WHITE_BOX = {"sim"}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_the_runtime_stays_off_the_engines_private_names():
    offences = []
    for path in _sources():
        rel = path.relative_to(PKG)
        if path.suffix != ".py" or rel.parts[0] in ({"raft"} | WHITE_BOX):
            continue
        module = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(node, module, path.name == "__init__.py")
                if target in ENGINE_INTERNALS:
                    offences.append(f"{rel}:{node.lineno} imports {target}")
                elif target == "fastraft.raft" and any(a.name == "Raft" for a in node.names):
                    offences.append(f"{rel}:{node.lineno} imports the engine class Raft")
            elif isinstance(node, ast.Import):
                offences += [f"{rel}:{node.lineno} imports {a.name}" for a in node.names
                             if a.name in ENGINE_INTERNALS]
            elif isinstance(node, ast.Attribute) and node.attr == "_raft":
                offences.append(f"{rel}:{node.lineno} reaches into RawNode._raft")
    assert not offences, "use RawNode's public surface instead:\n" + "\n".join(offences)
