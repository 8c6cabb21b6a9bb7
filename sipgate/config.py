"""Process settings from TOML, as frozen dataclasses with embedded defaults.

Parsing reports every problem it can find, not just the first: a file with
a wrong type in one key and an unknown key in another section raises one
:class:`ConfigErrors` listing both (each a :class:`ConfigError` naming its
key as a TOML path, e.g. ``sip.listen[1].address``).
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sipgate.sip.limits import SipLimits

__all__ = [
    "AccountConfig",
    "ApiConfig",
    "api_listen_problem",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "FloodConfig",
    "LifecycleConfig",
    "Listener",
    "LOG_LEVELS",
    "LogConfig",
    "MetricsConfig",
    "RESTART_KEYS",
    "RUNTIME_KEYS",
    "SipConfig",
    "StoreConfig",
    "config_from_dict",
    "is_loopback_host",
    "load_config",
    "parse_hostport",
    "restart_required",
    "store_limits",
]

DEFAULT_SIP_PORT = 5060
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A problem with a config file, naming the key it is about."""

    def __init__(self, key: str, problem: str, source: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}")


class ConfigErrors(ConfigError):
    """Every problem found in one config file (at least one).

    ``errors`` lists them, each a :class:`ConfigError` whose ``str()`` is
    ``FILE: key: problem``; ``str()`` of the whole is those lines joined by
    newlines.  ``key``, ``problem`` and ``source`` are the first error's, so
    code written for a single :class:`ConfigError` keeps working.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.key, first.problem, first.source)
        # ValueError.args / str(): every problem, one per line.
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True, slots=True)
class Listener:
    """One UDP socket sipgate listens on.

    ``advertise`` is the address put into the Via and Record-Route that
    sipgate inserts (required when ``host`` is a wildcard address).
    ``default_trunk`` names the trunk (by domain name) for requests whose
    Request-URI host is an IP address rather than a trunk domain: carriers
    that address the edge by its IP are served this way.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_SIP_PORT
    advertise: str | None = None
    # The embedded default serves the demo trunk of config/demo-seed.toml,
    # so SIPp's built-in uac (Request-URI sip:service@127.0.0.1) finds it.
    default_trunk: str | None = "demo.sipgate.test"

    @property
    def public_host(self) -> str:
        """The host other parties reach this listener at."""
        return self.advertise or self.host


@dataclass(frozen=True, slots=True)
class SipConfig:
    """The SIP edge: listeners, the PBX behind it, and limits."""

    listen: tuple[Listener, ...] = (Listener(),)
    pbx: tuple[str, int] = ("127.0.0.1", 5070)
    # Addresses whose datagrams are trusted as coming from the PBX side
    # (requests from them are routed by Route / Request-URI).  The PBX's own
    # address is always trusted.
    trusted: tuple[str, ...] = ()
    # What an initial request for an unknown Request-URI host gets:
    # "reject" answers 404 Not Found, "drop" stays silent (hides the edge
    # from scanners).
    unknown_host: str = "reject"
    # Extra host names that mean "sipgate itself" in a Request-URI or Route.
    aliases: tuple[str, ...] = ()
    # Key for the stateless To-tags and Via branches; every node and worker
    # behind the same address must share it so retransmissions get the same
    # answer wherever they land.
    secret: str = "sipgate-change-me"
    socket_buffer: int = 4 * 1024 * 1024
    max_datagram: int = 65535
    server_header: str = "sipgate"
    # Seconds between SIP OPTIONS pings to the PBX (sipgate.pbxprobe): a
    # PBX whose port is closed shows as sipgate_pbx_reachable 0.  0 = off.
    pbx_probe_interval: float = 0.0
    # Message size limits (header lines, Vias, line length, Request-URI):
    # see sipgate.sip.limits for the status each gets.
    limits: SipLimits = SipLimits()

    @property
    def trusted_hosts(self) -> frozenset[str]:
        """The PBX address plus every configured trusted address."""
        return frozenset((self.pbx[0], *self.trusted))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where trunks and lists live, and how much of them an account may have."""

    url: str = "sqlite:sipgate.db"
    # Twilio allows 100 entries per list and 1,000 lists per account;
    # sipgate has no limit unless one is set here (0 = unlimited).
    max_ips_per_list: int = 0
    max_lists_per_account: int = 0
    # How often the edge checks the store's revision for changes made by
    # another process (``sipgate seed``, a second node); seconds.
    poll_interval: float = 0.5


def store_limits(store: StoreConfig) -> dict[str, int | None]:
    """The store's limit keyword arguments (None = unlimited)."""
    return {"max_ips_per_list": store.max_ips_per_list or None,
            "max_lists_per_account": store.max_lists_per_account or None}


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus exposition endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9160


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The Twilio-compatible REST API (served in the edge's event loop).

    ``tls_cert`` / ``tls_key``: PEM certificate (chain) and private key
    files ("" = none); with both the API serves HTTPS (TLS 1.2 or later).  Without them
    it listens only on a loopback address unless ``allow_insecure``.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8088
    tls_cert: str = ""
    tls_key: str = ""
    allow_insecure: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: only this machine can connect."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_listen_problem(api: ApiConfig) -> str | None:
    """Why the API must not start on ``api.listen`` as configured, or None."""
    if not api.enabled or api.tls or api.allow_insecure or is_loopback_host(api.host):
        return None
    return (f"{api.host} is not a loopback address: the API would send auth tokens in clear text; "
            "set api.tls_cert and api.tls_key, or allow_insecure = true (behind a TLS proxy)")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The process log and the deny log (one line per refused request)."""

    # Level of the process log (stderr): DEBUG, INFO, WARNING or ERROR.
    level: str = "INFO"
    # Deny log file: "" = off, "-" = stderr; a relative path is relative to
    # the config file's directory.
    deny_log: str = ""
    # At most deny_log_burst lines per source address per deny_log_interval
    # seconds; the rest are counted in one "suppressed" line.
    deny_log_burst: int = 5
    deny_log_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class FloodConfig:
    """Scanner flood defence (Kamailio's pike): ban sources that keep being refused."""

    enabled: bool = True
    # More than ``density`` refused requests from one source within
    # ``window`` seconds bans it for ``ban_seconds``.
    density: int = 30
    window: float = 2.0
    ban_seconds: float = 60.0
    # Sources tracked (and banned) at most; the oldest is forgotten first.
    max_sources: int = 65536


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """Process lifecycle."""

    # SIGTERM: stop receiving, answer what arrived, finish API requests in
    # flight and write the logs within this many seconds, then exit.
    shutdown_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """An API account: its SID and auth token."""

    sid: str
    auth_token: str
    friendly_name: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a sipgate process needs to know at start."""

    sip: SipConfig = field(default_factory=SipConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    log: LogConfig = field(default_factory=LogConfig)
    flood: FloodConfig = field(default_factory=FloodConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    accounts: tuple[AccountConfig, ...] = ()
    seed: str | None = None


# -- what SIGHUP can change ---------------------------------------------------

# Keys whose change needs a restart: they are bound sockets, an open store,
# or read once at start.  ``restart_required`` names those that differ.
_RESTART: tuple[tuple[str, Callable[[Config], Any]], ...] = (
    ("sip.listen", lambda c: c.sip.listen),
    ("sip.socket_buffer", lambda c: c.sip.socket_buffer),
    ("sip.pbx_probe_interval", lambda c: c.sip.pbx_probe_interval),
    ("store.url", lambda c: c.store.url),
    ("api.enabled", lambda c: c.api.enabled),
    ("api.listen", lambda c: (c.api.host, c.api.port)),
    ("api.tls_cert", lambda c: c.api.tls_cert),
    ("api.tls_key", lambda c: c.api.tls_key),
    ("api.allow_insecure", lambda c: c.api.allow_insecure),
    ("metrics.enabled", lambda c: c.metrics.enabled),
    ("metrics.listen", lambda c: (c.metrics.host, c.metrics.port)),
    ("lifecycle.shutdown_timeout", lambda c: c.lifecycle.shutdown_timeout),
)
RESTART_KEYS: tuple[str, ...] = tuple(key for key, _ in _RESTART)
# Keys SIGHUP applies at run time (the rest of the file).
RUNTIME_KEYS: tuple[str, ...] = (
    "sip.pbx", "sip.trusted", "sip.unknown_host", "sip.aliases", "sip.secret", "sip.max_datagram",
    "sip.server_header", "sip.max_headers", "sip.max_vias", "sip.max_header_line", "sip.max_uri",
    "store.poll_interval", "store.max_ips_per_list", "store.max_lists_per_account",
    "log.level", "log.deny_log", "log.deny_log_burst", "log.deny_log_interval",
    "flood.enabled", "flood.density", "flood.window", "flood.ban_seconds", "flood.max_sources",
    "accounts", "seed",
)


def restart_required(old: Config, new: Config) -> list[str]:
    """The keys (TOML paths, in RESTART_KEYS order) that differ between
    ``old`` and ``new`` and only take effect at the next start; every other
    key (RUNTIME_KEYS) can be applied by SIGHUP."""
    return [key for key, get in _RESTART if get(old) != get(new)]


# -- parsing ---------------------------------------------------------------------


class _Problems:
    """The errors found so far; ``with problems.check():`` records a
    ConfigError raised inside the block and carries on after it."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigErrors as exc:
            self.errors.extend(exc.errors)
        except ConfigError as exc:
            self.errors.append(exc)

    def add(self, key: str, problem: str) -> None:
        self.errors.append(ConfigError(key, problem))


def parse_hostport(text: str, key: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` / ``host`` into a tuple."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(key, f"unterminated IPv6 literal in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(key, f"expected ':port' after ']' in {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ConfigError(key, f"missing host in {text!r}")
    if port_text is None:
        if default_port is None:
            raise ConfigError(key, f"missing port in {text!r}")
        return host, default_port
    # Port 0 asks the kernel for an ephemeral port (tests, side-by-side runs).
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(key, f"invalid port in {text!r}")
    return host, int(port_text)


def _unknown_keys(table: dict[str, Any], allowed: set[str], prefix: str, problems: _Problems) -> None:
    for key in table:
        if key not in allowed:
            problems.add(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:  # "a number" says it: integers are numbers
        kinds = tuple(k for k in kinds if k is not int)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _typed(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass: never accept it where a number is wanted.
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(key, f"expected {_kind_name(kind)}, got {value!r}")
    return value


def _int_at_least(value: Any, key: str, low: int) -> int:
    value = _typed(value, int, key)
    if value < low:
        raise ConfigError(key, f"must be {low} or more, got {value}")
    return value


def _seconds(value: Any, key: str) -> float:
    """A positive, finite number of seconds."""
    seconds = float(_typed(value, (int, float), key))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(key, f"must be a number of seconds greater than 0, got {value!r}")
    return seconds


def _relative_to(path: str, base_dir: Path | None) -> str:
    if base_dir is not None and not Path(path).is_absolute():
        return str(base_dir / path)
    return path


def _listener(item: Any, p: str, problems: _Problems) -> Listener | None:
    """One entry of sip.listen (``p`` is e.g. ``sip.listen[1]``); None if broken."""
    if isinstance(item, str):
        host, port = parse_hostport(item, p, DEFAULT_SIP_PORT)
        return Listener(host=host, port=port, default_trunk=None)
    if not isinstance(item, dict):
        raise ConfigError(p, "expected \"host:port\" or a table")
    before = len(problems.errors)
    _unknown_keys(item, {"address", "advertise", "default_trunk"}, p + ".", problems)
    address: tuple[str, int] | None = None
    advertise: str | None = None
    default_trunk: str | None = None
    if "address" not in item:
        problems.add(p + ".address", "required")
    else:
        with problems.check():
            address = parse_hostport(_typed(item["address"], str, p + ".address"), p + ".address",
                                     DEFAULT_SIP_PORT)
    if "advertise" in item:
        with problems.check():
            advertise = _typed(item["advertise"], str, p + ".advertise")
    if "default_trunk" in item:
        with problems.check():
            default_trunk = _typed(item["default_trunk"], str, p + ".default_trunk")
    if address is not None and "advertise" not in item and address[0] in ("0.0.0.0", "::"):
        problems.add(p + ".advertise", f"required when listening on the wildcard address {address[0]}")
    if len(problems.errors) > before or address is None:
        return None
    return Listener(host=address[0], port=address[1], advertise=advertise,
                    default_trunk=default_trunk.lower() if default_trunk else None)


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    items = _typed(value, list, key)
    bad = [i for i, x in enumerate(items) if not isinstance(x, str)]
    if bad:
        raise ConfigError(key, f"expected a list of strings (item {bad[0]} is {items[bad[0]]!r})")
    return tuple(x.lower() for x in items)


# [sip] message size limits -> (lowest, highest) accepted.
_LIMIT_RANGES: dict[str, tuple[int, int]] = {
    "max_headers": (32, 4096),
    "max_vias": (8, 1024),
    "max_header_line": (1024, 65535),
    "max_uri": (256, 65535),
}


def _sip(table: dict[str, Any], problems: _Problems, _base_dir: Path | None) -> SipConfig:
    p = "sip."
    _unknown_keys(table, {"listen", "pbx", "trusted", "unknown_host", "aliases", "secret", "socket_buffer",
                          "max_datagram", "server_header", "pbx_probe_interval", *_LIMIT_RANGES}, p, problems)
    kw: dict[str, Any] = {}
    if "listen" in table:
        with problems.check():
            items = _typed(table["listen"], list, p + "listen")
            if not items:
                raise ConfigError(p + "listen", "at least one listener is required")
            listeners = []
            for i, item in enumerate(items):
                with problems.check():
                    listeners.append(_listener(item, f"{p}listen[{i}]", problems))
            if len(listeners) == len(items) and None not in listeners:
                kw["listen"] = tuple(listeners)
    if "pbx" in table:
        with problems.check():
            kw["pbx"] = parse_hostport(_typed(table["pbx"], str, p + "pbx"), p + "pbx", DEFAULT_SIP_PORT)
    for key in ("trusted", "aliases"):
        if key in table:
            with problems.check():
                kw[key] = _string_list(table[key], p + key)
    if "unknown_host" in table:
        with problems.check():
            value = _typed(table["unknown_host"], str, p + "unknown_host")
            if value not in ("reject", "drop"):
                raise ConfigError(p + "unknown_host", f"expected \"reject\" or \"drop\", got {value!r}")
            kw["unknown_host"] = value
    for key in ("secret", "server_header"):
        if key in table:
            with problems.check():
                kw[key] = _typed(table[key], str, p + key)
    for key, low, high in (("socket_buffer", 65536, 1 << 30), ("max_datagram", 512, 65535)):
        if key in table:
            with problems.check():
                value = _typed(table[key], int, p + key)
                if not low <= value <= high:
                    raise ConfigError(p + key, f"must be between {low} and {high}")
                kw[key] = value
    limits: dict[str, int] = {}
    for key, (low, high) in _LIMIT_RANGES.items():
        if key in table:
            with problems.check():
                value = _typed(table[key], int, p + key)
                if not low <= value <= high:
                    raise ConfigError(p + key, f"must be between {low} and {high}")
                limits[key] = value
    if limits:
        kw["limits"] = replace(SipLimits(), **limits)
    if "pbx_probe_interval" in table:
        with problems.check():
            interval = float(_typed(table["pbx_probe_interval"], (int, float), p + "pbx_probe_interval"))
            if not (interval == 0 or 0.5 <= interval <= 3600):
                raise ConfigError(p + "pbx_probe_interval", "must be 0 (off) or between 0.5 and 3600 seconds")
            kw["pbx_probe_interval"] = interval
    return replace(SipConfig(), **kw)


def _store(table: dict[str, Any], problems: _Problems, _base_dir: Path | None) -> StoreConfig:
    p = "store."
    _unknown_keys(table, {"url", "poll_interval", "max_ips_per_list", "max_lists_per_account"}, p, problems)
    kw: dict[str, Any] = {}
    for key in ("max_ips_per_list", "max_lists_per_account"):
        if key in table:
            with problems.check():
                value = _typed(table[key], int, p + key)
                if value < 0:
                    raise ConfigError(p + key, "must be 0 (unlimited) or more")
                kw[key] = value
    if "url" in table:
        with problems.check():
            kw["url"] = _typed(table["url"], str, p + "url")
    if "poll_interval" in table:
        with problems.check():
            value = float(_typed(table["poll_interval"], (int, float), p + "poll_interval"))
            if not 0.01 <= value <= 3600:
                raise ConfigError(p + "poll_interval", "must be between 0.01 and 3600 seconds")
            kw["poll_interval"] = value
    return replace(StoreConfig(), **kw)


def _endpoint(cls: type, p: str) -> Callable[[dict[str, Any], _Problems, Path | None], Any]:
    """[metrics] and [api]: enabled, listen = "host:port"."""

    def build(table: dict[str, Any], problems: _Problems, _base_dir: Path | None) -> Any:
        _unknown_keys(table, {"enabled", "listen"}, p, problems)
        kw: dict[str, Any] = {}
        if "enabled" in table:
            with problems.check():
                kw["enabled"] = _typed(table["enabled"], bool, p + "enabled")
        if "listen" in table:
            with problems.check():
                kw["host"], kw["port"] = parse_hostport(_typed(table["listen"], str, p + "listen"), p + "listen")
        return replace(cls(), **kw)

    return build


def _readable_file(path: str, key: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(key, f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(key, f"cannot read {path}")


def _api(table: dict[str, Any], problems: _Problems, base_dir: Path | None) -> ApiConfig:
    """[api]: enabled, listen, tls_cert, tls_key, allow_insecure."""
    p = "api."
    _unknown_keys(table, {"enabled", "listen", "tls_cert", "tls_key", "allow_insecure"}, p, problems)
    before = len(problems.errors)
    kw: dict[str, Any] = {}
    if "enabled" in table:
        with problems.check():
            kw["enabled"] = _typed(table["enabled"], bool, p + "enabled")
    if "listen" in table:
        with problems.check():
            kw["host"], kw["port"] = parse_hostport(_typed(table["listen"], str, p + "listen"), p + "listen")
    if "allow_insecure" in table:
        with problems.check():
            kw["allow_insecure"] = _typed(table["allow_insecure"], bool, p + "allow_insecure")
    files: dict[str, str] = {}
    given: set[str] = set()
    for key in ("tls_cert", "tls_key"):
        if key in table:
            with problems.check():
                value = _typed(table[key], str, p + key)
                if value:
                    given.add(key)
                    files[key] = _relative_to(value, base_dir)
                    _readable_file(files[key], p + key)
    for key, other in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        if key in given and other not in given and not any(e.key == p + other for e in problems.errors[before:]):
            problems.add(p + other, f"required with {p}{key} (a certificate and its private key)")
    if len(files) == 2 and len(problems.errors) == before:
        with problems.check():
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files["tls_cert"],
                                                                                   files["tls_key"])
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(p + "tls_cert", f"cannot load certificate {files['tls_cert']} with key "
                                  f"{files['tls_key']}: {exc}") from None
    kw.update(files)
    api = replace(ApiConfig(), **kw)
    if len(problems.errors) == before and (problem := api_listen_problem(api)):
        problems.add(p + "listen", problem)
    return api


def _log(table: dict[str, Any], problems: _Problems, base_dir: Path | None) -> LogConfig:
    p = "log."
    _unknown_keys(table, {"level", "deny_log", "deny_log_burst", "deny_log_interval"}, p, problems)
    kw: dict[str, Any] = {}
    if "level" in table:
        with problems.check():
            value = _typed(table["level"], str, p + "level")
            if value.upper() not in LOG_LEVELS:
                raise ConfigError(p + "level", f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
            kw["level"] = value.upper()
    if "deny_log" in table:
        with problems.check():
            value = _typed(table["deny_log"], str, p + "deny_log")
            kw["deny_log"] = value if value in ("", "-") else _relative_to(value, base_dir)
    if "deny_log_burst" in table:
        with problems.check():
            kw["deny_log_burst"] = _int_at_least(table["deny_log_burst"], p + "deny_log_burst", 1)
    if "deny_log_interval" in table:
        with problems.check():
            kw["deny_log_interval"] = _seconds(table["deny_log_interval"], p + "deny_log_interval")
    return replace(LogConfig(), **kw)


def _flood(table: dict[str, Any], problems: _Problems, _base_dir: Path | None) -> FloodConfig:
    p = "flood."
    _unknown_keys(table, {"enabled", "density", "window", "ban_seconds", "max_sources"}, p, problems)
    kw: dict[str, Any] = {}
    if "enabled" in table:
        with problems.check():
            kw["enabled"] = _typed(table["enabled"], bool, p + "enabled")
    for key, low in (("density", 1), ("max_sources", 16)):
        if key in table:
            with problems.check():
                kw[key] = _int_at_least(table[key], p + key, low)
    for key in ("window", "ban_seconds"):
        if key in table:
            with problems.check():
                kw[key] = _seconds(table[key], p + key)
    return replace(FloodConfig(), **kw)


def _lifecycle(table: dict[str, Any], problems: _Problems, _base_dir: Path | None) -> LifecycleConfig:
    p = "lifecycle."
    _unknown_keys(table, {"shutdown_timeout"}, p, problems)
    kw: dict[str, Any] = {}
    if "shutdown_timeout" in table:
        with problems.check():
            kw["shutdown_timeout"] = _seconds(table["shutdown_timeout"], p + "shutdown_timeout")
    return replace(LifecycleConfig(), **kw)


def _account(item: Any, p: str, problems: _Problems) -> AccountConfig | None:
    """One [[accounts]] table (``p`` is e.g. ``accounts[0]``); None if broken."""
    if not isinstance(item, dict):
        raise ConfigError(p, "expected a table")
    before = len(problems.errors)
    _unknown_keys(item, {"sid", "auth_token", "friendly_name"}, p + ".", problems)
    kw: dict[str, Any] = {}
    for key in ("sid", "auth_token"):
        if key not in item:
            problems.add(f"{p}.{key}", "required")
    if "sid" in item:
        with problems.check():
            sid = _typed(item["sid"], str, p + ".sid")
            if len(sid) != 34 or not sid.startswith("AC") or not all(c in "0123456789abcdefABCDEF" for c in sid[2:]):
                raise ConfigError(p + ".sid", "expected AC followed by 32 hex digits")
            kw["sid"] = sid
    if "auth_token" in item:
        with problems.check():
            token = _typed(item["auth_token"], str, p + ".auth_token")
            if not token:
                raise ConfigError(p + ".auth_token", "must not be empty")
            kw["auth_token"] = token
    if "friendly_name" in item:
        with problems.check():
            kw["friendly_name"] = _typed(item["friendly_name"], str, p + ".friendly_name")
    if len(problems.errors) > before:
        return None
    return AccountConfig(**kw)


def _accounts(items: Any, problems: _Problems) -> tuple[AccountConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError("accounts", "expected an array of tables ([[accounts]])")
    out = []
    for i, item in enumerate(items):
        with problems.check():
            account = _account(item, f"accounts[{i}]", problems)
            if account is not None:
                out.append(account)
    return tuple(out)


_SECTIONS: dict[str, Callable[[dict[str, Any], _Problems, Path | None], Any]] = {
    "sip": _sip,
    "store": _store,
    "metrics": _endpoint(MetricsConfig, "metrics."),
    "api": _api,
    "log": _log,
    "flood": _flood,
    "lifecycle": _lifecycle,
}


def config_from_dict(data: dict[str, Any], source: str | None = None, base_dir: Path | None = None) -> Config:
    """Build a Config from parsed TOML.

    Every section, key and value is checked; if anything is wrong, one
    :class:`ConfigErrors` lists every problem, each naming its key (and
    ``source``, the file, when given).
    """
    problems = _Problems()
    _unknown_keys(data, {*_SECTIONS, "accounts", "seed"}, "", problems)
    kw: dict[str, Any] = {}
    for key, build in _SECTIONS.items():
        if key in data:
            with problems.check():
                if not isinstance(data[key], dict):
                    raise ConfigError(key, "expected a table")
                kw[key] = build(data[key], problems, base_dir)
    if "accounts" in data:
        with problems.check():
            kw["accounts"] = _accounts(data["accounts"], problems)
    if "seed" in data:
        with problems.check():
            kw["seed"] = _relative_to(_typed(data["seed"], str, "seed"), base_dir)
    if problems.errors:
        raise ConfigErrors([e if e.source or not source else ConfigError(e.key, e.problem, source)
                            for e in problems.errors])
    return Config(**kw)


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config file; ``None`` gives the embedded defaults.

    Raises :class:`ConfigErrors` (a :class:`ConfigError`) listing every
    problem found; a file that cannot be read or is not valid TOML is one
    problem, keyed ``(file)`` or ``(syntax)``.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigErrors([ConfigError("(file)", f"cannot read: {exc.strerror or exc}", str(path))]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError("(syntax)", str(exc), str(path))]) from None
    return config_from_dict(data, str(path), path.parent)
