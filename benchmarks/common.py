"""What several benchmark scripts share: another revision checked out
beside this one, and a report printed and appended to RESULTS.md."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def baseline_worktree(rev: str | None, directory: Path) -> Iterator[Path | None]:
    """``rev`` checked out (detached git worktree) under ``directory`` for
    the duration, removed after; None when there is no ``rev``."""
    if not rev:
        yield None
        return
    path = directory / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False,
                       capture_output=True)


def publish(text: str, results: str) -> None:
    """Print a report and append it to ``results`` ('-': print only)."""
    print(text)
    if results != "-":
        with open(results, "a") as out:
            out.write(text)
