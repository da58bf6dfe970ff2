"""Build of the C core (``noiseshape._core``); all other metadata lives in pyproject.toml."""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args: list[str] = ["/O2"]
    link_args: list[str] = []
else:
    compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-pthread"]
    link_args = ["-pthread"] + (["-ldl"] if sys.platform.startswith("linux") else [])  # dlopen (threads.c)

setup(
    ext_modules=[
        Extension(
            "noiseshape._core",
            sources=[
                "csrc/module.c",
                "csrc/dispatch.c",
                "csrc/isa_scalar.c",
                "csrc/isa_avx2.c",
                "csrc/isa_avx512.c",
                "csrc/masks.c",
                "csrc/apply_mask.c",
                "csrc/factors.c",
                "csrc/normal.c",
                "csrc/pages.c",
                "csrc/threads.c",
            ],
            depends=["csrc/kernels.h", "csrc/core.h", "csrc/philox.h", "csrc/convert.h", "csrc/vmath.h"],
            include_dirs=["csrc"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]
)
