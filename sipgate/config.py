"""Process settings from TOML, as frozen dataclasses with embedded defaults."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "AccountConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "Listener",
    "MetricsConfig",
    "SipConfig",
    "StoreConfig",
    "load_config",
    "parse_hostport",
]

DEFAULT_SIP_PORT = 5060


class ConfigError(ValueError):
    """A problem with a config file, naming the key it is about."""

    def __init__(self, key: str, problem: str, source: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}")


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
    """The Twilio-compatible REST API (served in the edge's event loop)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8088


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
    accounts: tuple[AccountConfig, ...] = ()
    seed: str | None = None


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


def _check_keys(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def _typed(table: dict[str, Any], key: str, kind: type | tuple[type, ...], prefix: str) -> Any:
    value = table[key]
    # bool is an int subclass: never accept it where a number is wanted.
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{prefix}{key}", f"expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{prefix}{key}", f"expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _listener(item: Any, prefix: str) -> Listener:
    if isinstance(item, str):
        host, port = parse_hostport(item, prefix, DEFAULT_SIP_PORT)
        return Listener(host=host, port=port, default_trunk=None)
    if not isinstance(item, dict):
        raise ConfigError(prefix, "expected \"host:port\" or a table")
    _check_keys(item, {"address", "advertise", "default_trunk"}, prefix + ".")
    if "address" not in item:
        raise ConfigError(prefix + ".address", "required")
    host, port = parse_hostport(_typed(item, "address", str, prefix + "."), prefix + ".address", DEFAULT_SIP_PORT)
    advertise = _typed(item, "advertise", str, prefix + ".") if "advertise" in item else None
    default_trunk = _typed(item, "default_trunk", str, prefix + ".") if "default_trunk" in item else None
    if advertise is None and host in ("0.0.0.0", "::"):
        raise ConfigError(prefix + ".advertise", f"required when listening on the wildcard address {host}")
    return Listener(host=host, port=port, advertise=advertise,
                    default_trunk=default_trunk.lower() if default_trunk else None)


def _sip(table: dict[str, Any]) -> SipConfig:
    p = "sip."
    allowed = {"listen", "pbx", "trusted", "unknown_host", "aliases", "secret", "socket_buffer",
               "max_datagram", "server_header"}
    _check_keys(table, allowed, p)
    base = SipConfig()
    kw: dict[str, Any] = {}
    if "listen" in table:
        items = _typed(table, "listen", list, p)
        if not items:
            raise ConfigError(p + "listen", "at least one listener is required")
        kw["listen"] = tuple(_listener(it, f"{p}listen[{i}]") for i, it in enumerate(items))
    if "pbx" in table:
        kw["pbx"] = parse_hostport(_typed(table, "pbx", str, p), p + "pbx", DEFAULT_SIP_PORT)
    for key in ("trusted", "aliases"):
        if key in table:
            items = _typed(table, key, list, p)
            if not all(isinstance(x, str) for x in items):
                raise ConfigError(p + key, "expected a list of strings")
            kw[key] = tuple(x.lower() for x in items)
    if "unknown_host" in table:
        value = _typed(table, "unknown_host", str, p)
        if value not in ("reject", "drop"):
            raise ConfigError(p + "unknown_host", f"expected \"reject\" or \"drop\", got {value!r}")
        kw["unknown_host"] = value
    for key in ("secret", "server_header"):
        if key in table:
            kw[key] = _typed(table, key, str, p)
    for key, low, high in (("socket_buffer", 65536, 1 << 30), ("max_datagram", 512, 65535)):
        if key in table:
            value = _typed(table, key, int, p)
            if not low <= value <= high:
                raise ConfigError(p + key, f"must be between {low} and {high}")
            kw[key] = value
    return replace(base, **kw)


def _store(table: dict[str, Any]) -> StoreConfig:
    p = "store."
    _check_keys(table, {"url", "poll_interval", "max_ips_per_list", "max_lists_per_account"}, p)
    kw: dict[str, Any] = {}
    for key in ("max_ips_per_list", "max_lists_per_account"):
        if key in table:
            value = _typed(table, key, int, p)
            if value < 0:
                raise ConfigError(p + key, "must be 0 (unlimited) or more")
            kw[key] = value
    if "url" in table:
        kw["url"] = _typed(table, "url", str, p)
    if "poll_interval" in table:
        value = float(_typed(table, "poll_interval", (int, float), p))
        if not 0.01 <= value <= 3600:
            raise ConfigError(p + "poll_interval", "must be between 0.01 and 3600 seconds")
        kw["poll_interval"] = value
    return replace(StoreConfig(), **kw)


def _metrics(table: dict[str, Any]) -> MetricsConfig:
    p = "metrics."
    _check_keys(table, {"enabled", "listen"}, p)
    kw: dict[str, Any] = {}
    if "enabled" in table:
        kw["enabled"] = _typed(table, "enabled", bool, p)
    if "listen" in table:
        kw["host"], kw["port"] = parse_hostport(_typed(table, "listen", str, p), p + "listen")
    return replace(MetricsConfig(), **kw)


def _api(table: dict[str, Any]) -> ApiConfig:
    p = "api."
    _check_keys(table, {"enabled", "listen"}, p)
    kw: dict[str, Any] = {}
    if "enabled" in table:
        kw["enabled"] = _typed(table, "enabled", bool, p)
    if "listen" in table:
        kw["host"], kw["port"] = parse_hostport(_typed(table, "listen", str, p), p + "listen")
    return replace(ApiConfig(), **kw)


def _accounts(items: Any) -> tuple[AccountConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError("accounts", "expected an array of tables ([[accounts]])")
    out = []
    for i, item in enumerate(items):
        p = f"accounts[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(p[:-1], "expected a table")
        _check_keys(item, {"sid", "auth_token", "friendly_name"}, p)
        for key in ("sid", "auth_token"):
            if key not in item:
                raise ConfigError(p + key, "required")
        sid = _typed(item, "sid", str, p)
        if len(sid) != 34 or not sid.startswith("AC") or not all(c in "0123456789abcdefABCDEF" for c in sid[2:]):
            raise ConfigError(p + "sid", "expected AC followed by 32 hex digits")
        token = _typed(item, "auth_token", str, p)
        if not token:
            raise ConfigError(p + "auth_token", "must not be empty")
        out.append(AccountConfig(sid=sid, auth_token=token,
                                 friendly_name=_typed(item, "friendly_name", str, p) if "friendly_name" in item else ""))
    return tuple(out)


def config_from_dict(data: dict[str, Any], source: str | None = None, base_dir: Path | None = None) -> Config:
    """Build a Config from parsed TOML, raising ConfigError naming the key."""
    try:
        _check_keys(data, {"sip", "store", "metrics", "api", "accounts", "seed"}, "")
        kw: dict[str, Any] = {}
        for key, build in (("sip", _sip), ("store", _store), ("metrics", _metrics), ("api", _api)):
            if key in data:
                if not isinstance(data[key], dict):
                    raise ConfigError(key, "expected a table")
                kw[key] = build(data[key])
        if "accounts" in data:
            kw["accounts"] = _accounts(data["accounts"])
        if "seed" in data:
            seed = _typed(data, "seed", str, "")
            if base_dir is not None and not Path(seed).is_absolute():
                seed = str(base_dir / seed)
            kw["seed"] = seed
        return Config(**kw)
    except ConfigError as exc:
        if source and exc.source is None:
            raise ConfigError(exc.key, exc.problem, source) from None
        raise


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read: {exc.strerror or exc}", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(syntax)", str(exc), str(path)) from None
    return config_from_dict(data, str(path), path.parent)

