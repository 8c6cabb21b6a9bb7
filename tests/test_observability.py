"""Metrics, dashboard and alerts (issue 5), checked with the real tools.

* ``promtool check config`` / ``check rules`` / ``test rules`` on
  ``config/prometheus/``: the example config and the rules load, and the
  rules' unit tests (each alert fires; each has a case where it must not) pass.
* ``promtool check metrics`` on the /metrics of a real ``sipgate serve``
  (after SIP and API traffic, so every labelled family has series): no
  lint problem at all.
* A real Prometheus (scrape and rule evaluation every second) scrapes that
  sipgate, with ``config/prometheus/sipgate-rules.yml`` loaded, while SIPp
  places admitted calls (127.0.0.2, through to a SIPp uas standing in for
  the PBX) and denied calls (127.0.0.3), and the Twilio-compatible API
  answers, twice with a scrape in between, a list, a create (an IpAddress
  in the demo list: a change that must be enforced), a 401 and a 404.  Then every PromQL expression of the
  dashboard and of the rules is evaluated through Prometheus' HTTP API, one
  test per expression (named by panel title and refId, or by alert name).

The rule for "the expression works":

* Grafana variables are substituted first: ``$__rate_interval``,
  ``$__interval`` and ``$__range`` become ``1m``; ``$instance`` (any form:
  ``$instance``, ``${instance}``, ``${instance:regex}``) becomes ``.*``, its
  "All" value.  Any other variable is a failure (the dashboard uses only the
  variables it defines).
* **Dashboard targets** are meant to show something whenever sipgate runs:
  each must parse (``status: success``) and return at least one series,
  not all of them NaN (a quantile over buckets that did not move is NaN:
  the traffic above moves every one of them).
* **Alert rules** are false on a healthy edge, so an empty result is
  right for them.  Each must parse and evaluate (``status: success``), must
  have been loaded and evaluated by Prometheus without error (rule health
  ``ok``), must carry a ``severity`` label and ``summary``/``description``
  annotations, and each vector selector in it (metric name with its label
  matchers, e.g. ``sipgate_decisions_total{result="reject"}``) must select
  at least one series: an alert that names a metric or a label value that
  never exists would never fire, and this catches it.  Whether the
  thresholds fire is what ``promtool test rules`` checks.
* **Every metric name** in any expression (and in the ``instance``
  variable's query) must be in sipgate's /metrics exposition (sample names,
  so ``_bucket``/``_count``/``_sum``/``_total`` as exposed).  The one
  exception is ``up``, which Prometheus writes itself for every scrape.

Everything listens on loopback; sipgate, Prometheus and the SIPp agents are
started by this module and stopped by PID.  The whole file takes about
20 s.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (
    ACCOUNT_SID,
    ALLOWED,
    AUTH_TOKEN,
    DEMO_DOMAIN,
    DEMO_SEED,
    DENIED,
    Serving,
    basic,
    metric,
    write_config,
)
from sipgate import sippkit

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "config" / "prometheus"
RULES = PROM_DIR / "sipgate-rules.yml"
RULES_TEST = PROM_DIR / "sipgate-rules.test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
DASHBOARD = ROOT / "config" / "grafana" / "sipgate-dashboard.json"

for _tool in ("promtool", "prometheus", "sipp"):
    if shutil.which(_tool) is None:  # bin/setup --test installs them; never skip silently
        raise RuntimeError(f"{_tool} not found: run bin/setup --test (Debian's prometheus, sip-tester)")

# Series Prometheus itself writes for every scrape: not in sipgate's exposition.
PROMETHEUS_OWN = frozenset({"up"})
JOB = "sipgate"  # the job name the rules expect (SipgateNotReady watches up{job="sipgate"})
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m", "instance": ".*"}
ADMITTED_CALLS = 10
DENIED_CALLS = 10
API_ROUND = 5  # requests per _api_round


# --------------------------------------------------------------------------
# Expressions: extraction, variable substitution, selectors
# --------------------------------------------------------------------------

def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title + refId, expr) for every target of every panel, rows' panels included."""
    board = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return out


def alert_names() -> list[str]:
    """Alert names in the rules file, read without a YAML library: Prometheus
    itself (``/api/v1/rules``) supplies each rule's expression and labels."""
    return re.findall(r"^\s*-\s*alert:\s*(\S+)\s*$", RULES.read_text(), re.M)


def substitute(expr: str) -> str:
    """Grafana variables -> values Prometheus can evaluate; unknown ones fail."""
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARS, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_VARS[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "bool", "offset", "inf", "nan"})
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"'            # a string literal
                    r"|\[[^\]]*\]"                  # a range or subquery window
                    r"|(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\{[^}]*\})?"  # identifier, matchers
                    r"|\{[^}]*\}")                  # matchers without a name


def selectors(expr: str) -> list[str]:
    """Vector selectors (``name{matchers}``) of a PromQL expression."""
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    out = []
    for m in _TOKEN.finditer(text):
        name = m.group(1)
        if not name or name.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end():]):  # a function call
            continue
        out.append(name + (m.group(2) or "").strip())
    return out


def metric_names(expr: str) -> set[str]:
    return {re.match(r"[\w:]+", s).group(0) for s in selectors(expr)}


def test_selector_extraction():
    """The extractor the tests below rely on."""
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(sipgate_x_bucket{le!="1e-3", a=~"b|c"}[5m])))'
            ' > 1e-3 * scalar(max without (route) (up)) or on (instance) absent(foo_total)'
            ' and bar offset 5m unless sum(rate(baz[1m] @ 1)) > bool 2')
    assert selectors(expr) == ['sipgate_x_bucket{le!="1e-3", a=~"b|c"}', "up", "foo_total", "bar", "baz"]
    assert substitute('rate(x{instance=~"$instance"}[$__rate_interval]) / ${instance:regex}') == \
        'rate(x{instance=~".*"}[1m]) / .*'


# --------------------------------------------------------------------------
# promtool on the files
# --------------------------------------------------------------------------

def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, timeout=60)


def test_promtool_check_config_and_rules():
    for args in (("check", "rules", str(RULES)), ("check", "config", str(PROM_CONFIG))):
        r = promtool(*args)
        assert r.returncode == 0, (args, r.stdout.decode(), r.stderr.decode())
    # The example config loads the rules file next to it, and scrapes the documented port.
    assert re.search(r"^\s*-\s*sipgate-rules\.yml\s*$", PROM_CONFIG.read_text(), re.M)
    assert '"127.0.0.1:9160"' in PROM_CONFIG.read_text()


def test_promtool_rule_unit_tests():
    r = promtool("test", "rules", str(RULES_TEST))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert b"SUCCESS" in r.stdout
    # Every alert of the rules file is exercised by the unit tests.
    tested = set(re.findall(r"alertname:\s*(\S+)", RULES_TEST.read_text()))
    assert tested == set(alert_names()) and len(tested) == 9


def test_dashboard_structure():
    board = json.loads(DASHBOARD.read_text())
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    inst = variables["instance"]
    assert inst["type"] == "query" and inst["includeAll"] and inst["allValue"] == ".*"
    assert inst["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    panels = [p for p in board["panels"]] + [c for p in board["panels"] for c in p.get("panels", [])]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in panels}
    for needed in ("Decisions per second by result and reason", "Decision latency p50 / p99",
                   "Decision latency distribution", "Datagrams in / out per second",
                   "Relayed requests / responses by direction", "Table generation and store revision",
                   "Table entries and trunks", "Change -> enforcement latency p50 / p99", "Flood bans active",
                   "Flood bans and banned datagrams dropped per second", "API requests per second by route and code",
                   "API latency p50 / p99", "API errors per second"):
        assert needed in titles, needed
    assert any(p["type"] == "heatmap" for p in panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            expr = target["expr"]
            # Windows of rate()/increase() follow Grafana's scrape-aware interval.
            for window in re.findall(r"\b(?:rate|irate|increase)\s*\([^\[]*\[([^\]]*)\]", expr):
                assert window == "$__rate_interval", (panel["title"], expr)
            # Every sipgate series is filtered by the instance variable.
            for sel in selectors(expr):
                if sel.startswith(("sipgate_", "process_")):
                    assert 'instance=~"$instance"' in sel, (panel["title"], sel)


# --------------------------------------------------------------------------
# A real sipgate, traffic, a real Prometheus
# --------------------------------------------------------------------------

def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def api(server: Serving, method: str, path: str, form: dict[str, str] | None = None,
        auth: tuple[str, str] = (ACCOUNT_SID, AUTH_TOKEN)) -> tuple[int, dict | None]:
    """One request to sipgate's Twilio-compatible API: (status, JSON body)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.api_port}{path}", data=data, method=method)
    req.add_header("Authorization", basic(*auth))
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, (json.loads(raw) if raw else None)


@dataclass
class Observed:
    """The running stack, frozen at one evaluation time."""

    server: Serving
    prom_url: str
    exposition: str        # sipgate's /metrics after the traffic
    at: float              # evaluation time for every query (a scrape after the traffic)

    def query(self, expr: str) -> dict:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{self.at:.3f}"})
        try:
            return json.loads(_get(url, timeout=10))
        except urllib.error.HTTPError as err:  # 400 bad_data for a parse error: keep the body
            return json.loads(err.read())

    def exposed_names(self) -> set[str]:
        return {re.match(r"[\w:]+", line).group(0)
                for line in self.exposition.splitlines() if line and not line.startswith("#")}


class Prometheus:
    """A `prometheus` subprocess on a free loopback port, stopped by its PID."""

    def __init__(self, tmp: Path, target: str, timeout: float = 20.0) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.port = _free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "prometheus exited:\n" + self.log()
            try:
                _get(f"{self.url}/-/ready", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "prometheus not ready:\n" + self.log()
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def value(self, expr: str) -> float | None:
        body = json.loads(_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, ok, what: str, timeout: float = 15.0) -> float:
        """Poll ``expr`` until ``ok(value)``; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(expr)
            if value is not None and ok(value):
                return value
            assert time.monotonic() < deadline, f"{what}: {expr} = {value}\n" + self.log()
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _sip_traffic(server: Serving, pbx_port: int, logdir: Path) -> None:
    """Admitted calls (through to a SIPp uas as the PBX) and denied calls."""
    edge = ("127.0.0.1", server.sip_port)
    uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas_no180", call_count=ADMITTED_CALLS, timeout=30,
                          logdir=logdir / "uas")
    try:
        ok = sippkit.start_uac((ALLOWED, sippkit.free_udp_port(ALLOWED)), edge, "uac_trunk",
                               call_count=ADMITTED_CALLS, rate=50, timeout=20,
                               keys={"trunk_domain": DEMO_DOMAIN}, logdir=logdir / "ok")
        no = sippkit.start_uac((DENIED, sippkit.free_udp_port(DENIED)), edge, "uac_403",
                               call_count=DENIED_CALLS, rate=50, timeout=20,
                               keys={"trunk_domain": DEMO_DOMAIN}, logdir=logdir / "no")
        admitted, denied = ok.wait(), no.wait()
    finally:
        served = uas.wait(timeout=10)
    assert admitted.successful_calls == ADMITTED_CALLS and admitted.failed_calls == 0, admitted.describe()
    assert denied.successful_calls == DENIED_CALLS and denied.failed_calls == 0, denied.describe()
    assert served.successful_calls == ADMITTED_CALLS, served.describe()


def _api_round(server: Serving, n: int) -> None:
    """API requests of four outcomes, one of them a write (an IpAddress added
    to the demo list, a change the edge must enforce)."""
    lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    status, body = api(server, "GET", f"{lists}.json")
    assert status == 200, body
    acl_sid = body["ip_access_control_lists"][0]["sid"]
    status, body = api(server, "POST", f"{lists}/{acl_sid}/IpAddresses.json",
                       {"FriendlyName": f"observability {n}", "IpAddress": f"198.51.100.{n}"})
    assert status == 201, body
    assert api(server, "GET", f"{lists}/{acl_sid}/IpAddresses.json")[0] == 200
    assert api(server, "GET", f"{lists}.json", auth=(ACCOUNT_SID, "wrong-token"))[0] == 401
    assert api(server, "GET", f"{lists}/AL{'f' * 32}.json")[0] == 404


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> Observed:
    tmp = tmp_path_factory.mktemp("observability")
    pbx_port = sippkit.free_udp_port("127.0.0.1")
    server = Serving(["serve", "--config", str(write_config(tmp, pbx_port)), "--seed", str(DEMO_SEED)])
    prom = None
    try:
        prom = Prometheus(tmp, f"127.0.0.1:{server.metrics_port}")
        # Scraped (and sipgate ready) before the traffic, so rates see it start.
        prom.wait_for(f'up{{job="{JOB}"}}', lambda v: v == 1, "sipgate never scraped")
        _sip_traffic(server, pbx_port, tmp / "sipp")
        # API series are created by their first request, and rate() cannot
        # see a series' first value as an increase: a second round after a
        # scrape gives every API series a rate.
        _api_round(server, 1)
        prom.wait_for("sum(sipgate_api_requests_total)", lambda v: v >= API_ROUND, "API requests not scraped")
        _api_round(server, 2)
        done = time.time()
        exposition = _get(f"http://127.0.0.1:{server.metrics_port}/metrics").decode()
        # The traffic is in Prometheus: a scrape after it, and the counts it made.
        prom.wait_for(f'timestamp(up{{job="{JOB}"}})', lambda v: v > done + 1, "no scrape after the traffic")
        prom.wait_for('sipgate_decisions_total{result="admit", reason="admitted"}',
                      lambda v: v >= ADMITTED_CALLS, "admitted calls not scraped")
        prom.wait_for("sum(sipgate_api_requests_total)", lambda v: v >= 2 * API_ROUND, "API requests not scraped")
        # Every rule evaluated at least once since.
        time.sleep(1.5)
        yield Observed(server, prom.url, exposition, at=time.time())
    finally:
        if prom is not None:
            prom.stop()
        assert server.stop() == 0


# --------------------------------------------------------------------------
# Live checks
# --------------------------------------------------------------------------

def test_metrics_exposition_passes_promtool_lint(observed):
    r = promtool("check", "metrics", stdin=observed.exposition.encode())
    problems = (r.stdout + r.stderr).decode().strip()
    assert r.returncode == 0 and not problems, f"promtool check metrics (exit {r.returncode}):\n{problems}"
    # The traffic is in the exposition too (so the lint covered labelled series).
    assert metric(observed.server, "sipgate_decisions_total", '{reason="forbidden",result="reject"}') >= DENIED_CALLS
    assert "sipgate_api_requests_total{" in observed.exposition


def test_instance_variable_finds_sipgate(observed):
    """The dashboard's `instance` variable: label_values(METRIC, instance)."""
    board = json.loads(DASHBOARD.read_text())
    inst = next(v for v in board["templating"]["list"] if v["name"] == "instance")
    m = re.fullmatch(r"label_values\((\w+),\s*instance\)", inst["definition"])
    assert m and m.group(1) in observed.exposed_names(), inst["definition"]
    url = (f"{observed.prom_url}/api/v1/label/instance/values?"
           + urllib.parse.urlencode({"match[]": m.group(1)}))
    values = json.loads(_get(url))["data"]
    assert values == [f"127.0.0.1:{observed.server.metrics_port}"]


DASH = dashboard_targets()


@pytest.mark.parametrize("expr", [e for _, e in DASH], ids=[n for n, _ in DASH])
def test_dashboard_query_returns_data(observed, expr):
    query = substitute(expr)
    body = observed.query(query)
    assert body.get("status") == "success", (query, body)
    values = [sample["value"][1] for sample in body["data"]["result"]]
    assert values, f"no data for {query}"
    assert any(v != "NaN" for v in values), f"only NaN for {query}"


@pytest.mark.parametrize("expr", [e for _, e in DASH], ids=[n for n, _ in DASH])
def test_dashboard_metrics_are_exported(observed, expr):
    names = metric_names(substitute(expr))
    assert names, expr
    missing = names - observed.exposed_names() - PROMETHEUS_OWN
    assert not missing, f"not in sipgate's /metrics: {sorted(missing)}"


@pytest.fixture(scope="module")
def loaded_rules(observed) -> dict[str, dict]:
    """Alerting rules as Prometheus loaded them, by name."""
    groups = json.loads(_get(f"{observed.prom_url}/api/v1/rules"))["data"]["groups"]
    return {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}


def test_rules_file_loaded_by_prometheus(loaded_rules):
    assert set(loaded_rules) == set(alert_names())
    assert set(alert_names()) == {"SipgateInternalErrors", "SipgateRejectionSpike", "SipgateDecisionLatencyHigh",
                                  "SipgateTableStale", "SipgateStoreDown", "SipgatePbxUnreachable", "SipgateNotReady",
                                  "SipgateEnforcementBehind", "SipgateWorkerRestarted"}


@pytest.mark.parametrize("alert", alert_names())
def test_alert_rule_evaluates(observed, loaded_rules, alert):
    rule = loaded_rules[alert]
    assert rule["health"] == "ok", rule.get("lastError")
    assert rule["labels"].get("severity") in {"critical", "warning"}, rule["labels"]
    assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["annotations"]
    # A healthy edge under this traffic fires nothing.
    assert rule["state"] == "inactive", rule
    expr = rule["query"]
    body = observed.query(expr)
    assert body.get("status") == "success", (expr, body)
    for sel in selectors(expr):
        result = observed.query(sel)
        assert result.get("status") == "success" and result["data"]["result"], f"{sel} selects nothing ({expr})"


@pytest.mark.parametrize("alert", alert_names())
def test_alert_metrics_are_exported(observed, loaded_rules, alert):
    names = metric_names(loaded_rules[alert]["query"])
    assert names
    missing = names - observed.exposed_names() - PROMETHEUS_OWN
    assert not missing, f"not in sipgate's /metrics: {sorted(missing)}"


def test_change_was_enforced_and_measured(observed):
    """Both API writes above are in the change -> enforcement histogram."""
    body = observed.query(f'sipgate_change_enforcement_seconds_count{{job="{JOB}"}}')
    assert body["status"] == "success" and body["data"]["result"], body
    assert float(body["data"]["result"][0]["value"][1]) >= 2
    finite = observed.query(
        "histogram_quantile(0.99, sum by (le) (rate(sipgate_change_enforcement_seconds_bucket[1m])))")
    value = float(finite["data"]["result"][0]["value"][1])
    assert math.isfinite(value) and 0 < value <= 30, value
