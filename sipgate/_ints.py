"""``i64``: mypy_extensions' machine integer, for the compiled modules.

Compiled (sipgate.native), a local or argument annotated ``i64`` is a C
``int64_t``: arithmetic and comparisons without the checks of Python's
tagged ints.  mypy_extensions comes with mypy, which the compiled build
needs; an interpreted install without it reads ``i64`` as ``int``.  One
place for that fallback, imported by every module that uses it.
"""

try:
    from mypy_extensions import i64
except ImportError:  # (an interpreted install without mypy: a plain int)
    i64 = int  # type: ignore[misc,assignment]

__all__ = ["i64"]
