"""The receive path compiled with mypyc, and the guard that keeps it honest.

``sipgate/sip/fast.py``, ``sipgate/transport/udp.py``,
``sipgate/acl/probe.py`` (the matcher's lookups), ``sipgate/stats.py``
(the counters every datagram touches) and ``sipgate/flood.py`` (the flood
defence, which counts every rejected request) are plain Python and always
work as such.  ``sipgate native build`` (``bin/setup`` runs it when a C
compiler and the Python headers are there) compiles those five modules with mypyc, as
one group, into extension modules beside their sources; CPython then
imports the extension instead of the source.  The
same source, compiled (see benchmarks/README.md for what it saves).

A compiled module can silently disagree with its source once either
changes, so the build records a SHA-256 of every ``.py`` file of the
package (the compiled code can inline constants of any module it was
type-checked with), and :func:`install`, run when ``sipgate`` is imported,
puts a finder in front of the import system that loads the *sources* of
the compiled modules unless every hash still matches.  So an edited file
means pure Python until the next build, never a stale extension.  Setting
``SIPGATE_PURE=1`` forces the sources too (the tests run the receive path
both ways).  :func:`status` says which one is in use; ``sipgate serve``
logs it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMPILED", "build", "clean", "install", "status"]

COMPILED = ("sipgate.sip.fast", "sipgate.transport.udp", "sipgate.acl.probe", "sipgate.stats", "sipgate.flood")
# Extensions written in C, built with the group and covered by the same
# guard; they have no Python source, so the compiled build alone imports
# them (sipgate/transport/udp.py and sipgate/sip/tag.py ask status() first).
EXTENSIONS = ("sipgate.transport._mmsg", "sipgate.sip._tag", "sipgate.sip._walk")
PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "native-manifest.json"
# mypyc's shared library of the group (sipgate/_native__mypyc*.so).
GROUP = "sipgate._native"

_verdict: tuple[bool, str] | None = None


def _digests() -> dict[str, str]:
    """SHA-256 of every source file of the package (Python and C), by path
    relative to it."""
    out = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c")]):
        out[path.relative_to(PACKAGE).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _extension(module: str) -> Path | None:
    """The built extension file of ``module`` beside its source, if any."""
    parts = module.split(".")[1:]
    directory = PACKAGE.joinpath(*parts[:-1])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / (parts[-1] + suffix)
        if candidate.exists():
            return candidate
    return None


def status() -> tuple[bool, str]:
    """(compiled modules in use, why): decided once per process."""
    global _verdict
    if _verdict is None:
        _verdict = _decide()
    return _verdict


def _decide() -> tuple[bool, str]:
    if os.environ.get("SIPGATE_PURE", "") not in ("", "0"):
        return False, "pure Python (SIPGATE_PURE is set)"
    if any(_extension(m) is None for m in (*COMPILED, *EXTENSIONS)):
        return False, "pure Python (not compiled: sipgate native build)"
    try:
        recorded = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False, "pure Python (no build manifest: sipgate native build)"
    if recorded.get("python") != sys.implementation.cache_tag or recorded.get("sources") != _digests():
        return False, "pure Python (sources changed since the build: sipgate native build)"
    return True, f"compiled with mypyc ({', '.join(COMPILED)}; C: {', '.join(EXTENSIONS)})"


class _SourcesUnlessFresh(importlib.abc.MetaPathFinder):
    """Load the compiled modules' sources unless the build is fresh."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in COMPILED or status()[0]:
            return None  # the normal finders: the extension comes before the source
        source = PACKAGE.joinpath(*name.split(".")[1:-1], name.rpartition(".")[2] + ".py")
        return importlib.util.spec_from_file_location(name, source)


def install() -> None:
    """Put the guard in front of the import system (idempotent)."""
    if not any(isinstance(f, _SourcesUnlessFresh) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesUnlessFresh())


def build() -> int:
    """Compile COMPILED with mypyc in place and write the manifest."""
    import tempfile

    try:
        from mypyc.build import mypycify
        from setuptools import Distribution, Extension
    except ImportError as exc:
        print(f"sipgate.native: cannot build ({exc}); install the 'native' extra", file=sys.stderr)
        return 1
    MANIFEST.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="sipgate-native-") as tmp:
        # mypy reads the sources from a directory holding only a link to the
        # package: run from the package's parent, which in an installed copy
        # is site-packages, it would take every module there for a source of
        # its own (and refuse mypy_extensions.py).  build_ext writes the
        # compiled modules through the link (rmtree removes only the link).
        root = Path(tmp) / "src"
        root.mkdir()
        (root / "sipgate").symlink_to(PACKAGE, target_is_directory=True)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            sources = [str(Path(*m.split(".")).with_suffix(".py")) for m in COMPILED]
            # Imported modules are type-checked but not compiled; their
            # errors (e.g. netaddr has no stubs) must not stop the build.
            modules = mypycify(["--follow-imports=silent", "--ignore-missing-imports", *sources],
                               group_name=GROUP, opt_level="3", target_dir=str(Path(tmp) / "c"))
            modules += [Extension(m, [str(Path(*m.split(".")).with_suffix(".c"))], extra_compile_args=["-O2"])
                        for m in EXTENSIONS]
            # Calls into libpython through the GOT, not through PLT stubs:
            # the first datagram after an idle spell finds neither in the
            # CPU's caches, and a stub is one more line to fetch per
            # function called (benchmarks/README.md, "Latency at low rates").
            for ext in modules:
                ext.extra_compile_args = [*ext.extra_compile_args, "-fno-plt"]
            dist = Distribution({"name": "sipgate-native", "ext_modules": modules})
            cmd = dist.get_command_obj("build_ext")
            cmd.inplace = True
            cmd.build_temp = str(Path(tmp) / "temp")
            cmd.build_lib = str(Path(tmp) / "lib")
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
    MANIFEST.write_text(json.dumps({"python": sys.implementation.cache_tag, "sources": _digests()}, indent=1))
    print(f"sipgate.native: compiled {', '.join((*COMPILED, *EXTENSIONS))}")
    return 0


def clean() -> int:
    """Remove the built extensions and the manifest (back to pure Python)."""
    removed = 0
    for path in [*PACKAGE.rglob("*.so"), *PACKAGE.rglob("*.pyd"), MANIFEST]:
        if path.exists():
            path.unlink()
            removed += 1
    print(f"sipgate.native: removed {removed} file(s)")
    return 0
