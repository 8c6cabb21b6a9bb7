"""sipgate: a SIP edge admission filter enforcing per-trunk IP access control lists."""
