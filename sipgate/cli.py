"""The ``sipgate`` command: serve, seed, check, check-config."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sipgate.config import LOG_LEVELS, Config, ConfigError, ConfigErrors, load_config, store_limits

__all__ = ["main"]


def _load(args: argparse.Namespace, path: str | None) -> Config:
    """Load the config; its ``log.level`` applies unless ``--log-level`` was given."""
    config = load_config(path)
    if args.log_level is None:
        logging.getLogger().setLevel(config.log.level)
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    from sipgate.server import run

    config = _load(args, args.config)
    # The path goes along so that SIGHUP can reread it.
    return run(config, seed=args.seed, workers=args.workers, config_path=args.config)


def cmd_seed(args: argparse.Namespace) -> int:
    from sipgate.store import open_store
    from sipgate.store.seed import load_seed

    config = _load(args, args.config)
    store = open_store(config.store.url, **store_limits(config.store))
    try:
        report = load_seed(store, args.file)
    finally:
        store.close()
    print(f"{args.file}: {report}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date (opening a store does it too,
    under a lock, so several nodes may start at once; this does it ahead of
    a rollout) and say where it stands."""
    from sipgate.store import open_store

    config = _load(args, args.config)
    store = open_store(config.store.url, **store_limits(config.store))
    try:
        revision = store.revision()
        module = __import__(type(store).__module__, fromlist=["MIGRATIONS"])
        version = len(module.MIGRATIONS)
    finally:
        store.close()
    print(f"{config.store.url}: schema version {version} (up to date), revision {revision}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from sipgate.admission import Context, explain
    from sipgate.reload import compile_snapshot
    from sipgate.store import open_store

    config = _load(args, args.config)
    store = open_store(config.store.url, **store_limits(config.store))
    try:
        snapshot = store.snapshot()
    finally:
        store.close()
    table = compile_snapshot(snapshot)
    entries = {acl_sid: [(e.ip_sid, e.ip_address, e.cidr_prefix_length) for e in acl]
               for acl_sid, acl in snapshot.acls.items()}
    # The same compiled table and trunk lookup the listener uses, with the
    # first listener's default trunk for IP-literal hosts.
    listener = config.sip.listen[0]
    ctx = Context(own_hosts=frozenset({listener.public_host.lower(), *config.sip.aliases}),
                  default_trunk=listener.default_trunk)
    result = explain(table, args.trunk, args.address, ctx, entries)
    print(result.text)
    return 0 if result.admitted else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem in the file, one ``FILE: key: problem`` line each on
    stderr, exit status 2; else the OK summary on stdout, exit status 0."""
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for error in _errors(exc):
            print(error, file=sys.stderr)
        return 2
    print(f"{args.file}: OK ({len(config.sip.listen)} listener(s), PBX {config.sip.pbx[0]}:{config.sip.pbx[1]}, "
          f"store {config.store.url})")
    return 0


def cmd_native(args: argparse.Namespace) -> int:
    """Compile the receive path with mypyc, remove the build, or say which is in use."""
    from sipgate import native

    if args.action == "build":
        return native.build()
    if args.action == "clean":
        return native.clean()
    compiled, why = native.status()
    print(why)
    return 0 if compiled else 1


def _errors(exc: ConfigError) -> list[ConfigError]:
    return exc.errors if isinstance(exc, ConfigErrors) else [exc]


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and 256")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipgate", description="SIP edge admission filter.")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                        help="DEBUG, INFO, WARNING or ERROR (default: log.level of the config, INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the SIP edge")
    p.add_argument("--config", help="TOML config file (default: embedded defaults)")
    p.add_argument("--seed", help="TOML seed file applied (idempotently) before serving")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="worker processes sharing the SIP sockets (default 1; see README)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="apply the store's schema migrations and report its version")
    p.add_argument("--config", help="TOML config file naming the store")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("seed", help="load trunks and lists from a TOML seed file into the store")
    p.add_argument("file")
    p.add_argument("--config", help="TOML config file naming the store")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("check", help="would ADDRESS be admitted for the trunk of DOMAIN, and why")
    p.add_argument("--trunk", required=True, metavar="DOMAIN", help="the trunk's domain name")
    p.add_argument("address", help="source IP address")
    p.add_argument("--config", help="TOML config file naming the store")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("native", help="compile the receive path with mypyc (build), remove it (clean), "
                                      "or say whether the compiled one is in use (status: exit 0 if so)")
    p.add_argument("action", choices=("build", "clean", "status"), nargs="?", default="status")
    p.set_defaults(func=cmd_native)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sipgate`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level or "INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        for error in _errors(exc):
            print(f"sipgate: config error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"sipgate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
