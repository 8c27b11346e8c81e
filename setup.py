"""The optional C speed-up of the Postfix parser (bounce_exporter/parsers/_fastscan.c).

Everything else is in pyproject.toml. ``optional=True``: without a C compiler or Python's headers
(Debian: build-essential, python3-dev) the build warns and goes on, and the exporter runs its
pure-Python parser (bounce_exporter.parsers.accel says which one runs).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    # a top-level module: found in site-packages even when the source tree's package is imported
    "bounce_exporter_fastscan",
    sources=["bounce_exporter/parsers/_fastscan.c", "bounce_exporter/parsers/fastscan_core.c"],
    depends=["bounce_exporter/parsers/fastscan.h"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
    optional=True,
)])
