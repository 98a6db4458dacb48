"""C accelerators for the hot path (everything else is in pyproject.toml).

Both are optional at run time: without them the pure-Python stages do the
same work, more slowly (tests compare the two on every golden capture).
"""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension("auditor._colenc", ["auditor/_native/colenc.c"], extra_compile_args=_FLAGS),
        Extension(
            "auditor._lane",
            ["auditor/_native/lane.c"],
            depends=["auditor/_native/lanefeed.h", "auditor/_native/slots.h"],
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "auditor._pcapwalk",
            ["auditor/_native/pcapwalk.c"],
            depends=["auditor/_native/slots.h"],
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "auditor._ringdrain",
            ["auditor/_native/ringdrain.c"],
            depends=["auditor/_native/lanefeed.h", "auditor/_native/slots.h"],
            extra_compile_args=_FLAGS,
        ),
    ]
)
