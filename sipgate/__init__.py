"""sipgate: a SIP edge admission filter enforcing per-trunk IP access control lists."""

from sipgate import native as _native

# The receive path may be compiled with mypyc; this guard loads its sources
# instead whenever the build is missing or older than them (sipgate.native).
_native.install()
