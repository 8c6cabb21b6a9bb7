"""The mypyc-compiled receive path (sipgate.native): used only when fresh, and
the same behaviour as the pure Python one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sipgate import native

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import sipgate.sip.fast as f, sipgate.transport.udp as u, sipgate.native as n; "
         "print(f.__file__); print(u.__file__); print(n.status()[1])")


def probe(env_extra: dict[str, str] | None = None, path: Path | None = None) -> list[str]:
    """Import the compiled modules in a fresh interpreter: their files and the status line."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIPGATE_PURE", "PYTHONPATH")}
    env.update(env_extra or {})
    if path is not None:
        env["PYTHONPATH"] = str(path)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=path or ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_this_process_uses_what_status_says():
    import sipgate.sip.fast as fast
    import sipgate.transport.udp as udp

    compiled, why = native.status()
    for module in (fast, udp):
        assert module.__file__.endswith(".py") != compiled, (module.__file__, why)


def test_sipgate_pure_forces_the_sources():
    fast, udp, why = probe({"SIPGATE_PURE": "1"})
    assert fast.endswith("fast.py") and udp.endswith("udp.py") and "SIPGATE_PURE" in why


def test_the_sources_run_without_mypy_extensions():
    """fast.py's loops are typed with mypy_extensions' i64, which mypy
    brings: an interpreted install without mypy reads it as int and
    scans as before."""
    code = ("import sys; sys.modules['mypy_extensions'] = None\n"
            "import sipgate.sip.fast as f\n"
            "data = (b'INVITE sip:a@t.example SIP/2.0\\r\\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1\\r\\n'\n"
            "        b'From: <sip:b@h>;tag=1\\r\\nTo: <sip:a@t.example>\\r\\nCall-ID: c\\r\\nCSeq: 7 INVITE\\r\\n'\n"
            "        b'Max-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n')\n"
            "s = f.scan(data)\n"
            "print(f.__file__, f.i64 is int, s[f.HOST], s[f.CSEQ_NUMBER], s[f.VIA_PORT], s[f.MAX_FORWARDS])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SIPGATE_PURE"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path, is_int, host, cseq, port, mf = out.stdout.split()
    assert path.endswith("fast.py") and is_int == "True"
    assert (host, cseq, port, mf) == ("t.example", "7", "5070", "70")


def test_an_edited_source_means_pure_python_until_the_next_build(tmp_path):
    """A copy of the package with one source changed after the build: the
    guard loads the sources, never the stale extension."""
    if not native.status()[0]:
        pytest.skip("the receive path is not compiled here (" + native.status()[1] + ")")
    copy = tmp_path / "sipgate"
    shutil.copytree(ROOT / "sipgate", copy, ignore=shutil.ignore_patterns("__pycache__"))
    fast, udp, why = probe(path=tmp_path)
    assert fast.startswith(str(copy)) and not fast.endswith(".py") and "compiled" in why
    edited = copy / "acl" / "network.py"  # not a compiled module: any source counts
    edited.write_text(edited.read_text() + "\n# edited\n")
    fast, udp, why = probe(path=tmp_path)
    assert fast == str(copy / "sip" / "fast.py") and udp == str(copy / "transport" / "udp.py")
    assert "sources changed" in why
    (copy / "native-manifest.json").unlink()
    assert "no build manifest" in probe(path=tmp_path)[2]


def test_the_receive_path_tests_pass_as_pure_python_too():
    """The suite runs the compiled receive path when there is one; its
    differential and transport tests then run again on the sources, with a
    quarter of the hypothesis examples (``helpers.examples``): the compiled
    run has already generated the full number against the same references."""
    if not native.status()[0]:
        pytest.skip("the whole suite already runs the pure Python receive path")
    env = {**os.environ, "SIPGATE_PURE": "1", "SIPGATE_TEST_RERUN": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "tests/sip/test_fast.py", "tests/sip/test_fast_grammar.py",
                          "tests/test_transport.py", "tests/test_socket_transport.py",
                          "tests/acl/test_acl_fast.py", "tests/acl/test_acl_properties.py", "tests/test_stats.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_an_installed_copy_carries_every_c_source():
    """``sipgate native build`` compiles the C extensions from their sources
    next to the modules: the package data must ship each of them (a
    non-editable install once lacked sip/_tag.c and sip/_walk.c)."""
    import fnmatch
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sipgate"]
    for module in native.EXTENSIONS:
        source = Path(*module.split(".")[1:]).with_suffix(".c")
        assert (ROOT / "sipgate" / source).is_file(), source
        assert any(fnmatch.fnmatch(source.as_posix(), g) for g in globs), (source, globs)
