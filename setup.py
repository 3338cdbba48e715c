"""Build script: compiles fastraft/_core.pyx into fastraft._core.

FASTRAFT_NO_EXTENSIONS=1 skips the extension entirely (the pure-Python twin
fastraft/_core_py.py is then the only core). Otherwise a compiler failure only warns and the
install runs on the twin (Extension(optional=True): the package works without it), unless
FASTRAFT_REQUIRE_EXTENSIONS=1 makes it fatal (CI sets it). tests/unit/test_implementation.py
also fails when an installed build silently fell back to the twin.
"""

import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("FASTRAFT_NO_EXTENSIONS"))
OPTIONAL = not os.environ.get("FASTRAFT_REQUIRE_EXTENSIONS")
if sys.implementation.name != "cpython":
    NO_EXTENSIONS = True

ext_modules = []
if not NO_EXTENSIONS:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension(
                "fastraft._core",
                ["fastraft/_core.pyx"],
                extra_compile_args=["-O3"] if os.name != "nt" else [],
                optional=OPTIONAL,
            )
        ],
        compiler_directives={"language_level": "3"},
        annotate=bool(os.environ.get("FASTRAFT_CYTHON_ANNOTATE")),
    )

print(
    "*" * 60
    + "\nfastraft core: "
    + ("pure Python (FASTRAFT_NO_EXTENSIONS)" if NO_EXTENSIONS else "Cython accelerated")
    + "\n"
    + "*" * 60,
    file=sys.stderr,
)

setup(ext_modules=ext_modules)
