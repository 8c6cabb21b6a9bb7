"""The package type-checks: `mypy sipgate` with the settings in pyproject.toml.

mypyc already checks the compiled modules when it builds them; this holds
the rest of the package (the API, the stores, the CLI) to the same.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors_in_the_package(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "sipgate"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    checked = re.search(r"^Success: no issues found in (\d+) source files$", out.stdout, re.M)
    assert checked, out.stdout
    # Every module of the package, not a configuration that checks nothing.
    assert int(checked.group(1)) == len(list((ROOT / "sipgate").rglob("*.py")))


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> str:\n    return x\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Incompatible return value type" in out.stdout, out.stdout
