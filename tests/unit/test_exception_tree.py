"""One exception tree: every exception class defined in fastraft derives from FastraftError.

Place in the architecture: a test of the package layout (like tests/unit/test_sourcecode.py).
It imports every module of ``fastraft`` (the ``__main__`` entry points excepted: importing them
runs a command) and checks each exception class defined there, so a caller can catch
``FastraftError`` for anything fastraft raises on purpose (docs/architecture.md,
"Conventions"; the tree is drawn in ``fastraft/errors.py``).

Not excepted: AssertionError subclasses would be (a broken invariant must crash the node, not
be caught as a FastraftError), but fastraft defines none; it raises plain AssertionError.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import fastraft
from fastraft.errors import FastraftError



def _modules():
    yield fastraft
    for info in pkgutil.walk_packages(fastraft.__path__, "fastraft."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        yield importlib.import_module(info.name)


def _exception_classes():
    for mod in _modules():
        for _name, obj in vars(mod).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == mod.__name__):
                yield f"{obj.__module__}.{obj.__qualname__}", obj


def test_every_exception_of_fastraft_derives_from_fastraft_error():
    found = dict(_exception_classes())
    assert "fastraft.errors.NotLeader" in found and "fastraft.client.bench.BenchAborted" in found
    outside = sorted(name for name, cls in found.items()
                     if not issubclass(cls, FastraftError)
                     and not issubclass(cls, AssertionError))
    assert not outside, f"not under FastraftError: {outside}"


def test_the_runtime_errors_are_in_the_tree_and_importable_where_used():
    from fastraft.errors import FatalError, RecoveryError
    from fastraft.server import backends, node

    assert issubclass(RecoveryError, FatalError) and issubclass(FatalError, FastraftError)
    assert node.FatalError is FatalError and backends.RecoveryError is RecoveryError
