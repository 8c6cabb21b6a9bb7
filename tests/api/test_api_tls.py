"""The API over HTTPS: a real `sipgate serve` with a throwaway CA's
certificate (trustme) on 127.0.0.1, real TLS clients, and the refusal to
serve plain HTTP off loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from helpers import ACCOUNT_SID, AUTH_TOKEN, DEMO_SEED, SIPGATE, Serving, UdpPeer, basic, write_config

AUTH = {"Authorization": basic()}


class TlsServing(Serving):
    """A `sipgate serve` whose API is HTTPS: learns the port from the
    "API on https://" line (Serving.stop stops it by PID)."""

    def started(self, timeout: float) -> None:
        line = self.wait_for(r"API on https?://127\.0\.0\.1:(\d+)", timeout)
        assert line.group(0).startswith("API on https://"), line.string
        self.api_port = int(line.group(1))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _tls_config(tmp: Path, pbx_port: int, api: str) -> Path:
    path = write_config(tmp, pbx_port)
    text = path.read_text()
    assert '[api]\nlisten = "127.0.0.1:0"\n' in text
    path.write_text(text.replace('[api]\nlisten = "127.0.0.1:0"\n', api))
    return path


@pytest.fixture(scope="module")
def server(ca, tmp_path_factory) -> Iterator[TlsServing]:
    tmp = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (tmp / "tls").mkdir()
    cert.cert_chain_pems[0].write_to_path(str(tmp / "tls" / "api.crt"))
    cert.private_key_pem.write_to_path(str(tmp / "tls" / "api.key"))
    pbx = UdpPeer("127.0.0.1")
    # Relative paths: relative to the config file.
    config = _tls_config(tmp, pbx.address[1], '[api]\nlisten = "127.0.0.1:0"\n'
                                              'tls_cert = "tls/api.crt"\ntls_key = "tls/api.key"\n')
    srv = TlsServing(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])
    try:
        yield srv
    finally:
        assert srv.stop() == 0
        pbx.close()


def _get(server: TlsServing, context: ssl.SSLContext | None, path: str = "/v1/Trunks") -> tuple[int, dict]:
    req = urllib.request.Request(f"https://127.0.0.1:{server.api_port}{path}", headers=AUTH)
    with urllib.request.urlopen(req, context=context, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_https_with_the_ca_works_and_urls_say_https(server, ca_file):
    context = ssl.create_default_context(cafile=str(ca_file))
    status, body = _get(server, context)
    assert status == 200
    assert body["trunks"], body  # the demo seed's trunk
    assert body["meta"]["url"].startswith(f"https://127.0.0.1:{server.api_port}/v1/Trunks?")
    assert body["trunks"][0]["url"].startswith(f"https://127.0.0.1:{server.api_port}/v1/Trunks/TK")
    # Without credentials: the same Twilio 401, over TLS.
    req = urllib.request.Request(f"https://127.0.0.1:{server.api_port}/v1/Trunks")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=context, timeout=10)
    assert err.value.code == 401 and json.loads(err.value.read())["code"] == 20003


def test_negotiated_protocol_is_tls_12_or_later(server, ca_file):
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.getpeercert()["subjectAltName"]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_12_is_refused(server, ca_file):
    context = ssl.create_default_context(cafile=str(ca_file))
    # This client offers TLS 1.1 (security level 0 lets OpenSSL send it):
    # the refusal must come from the server: a protocol_version alert, or
    # (uvloop's TLS) the connection closed in the handshake.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as err:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    assert isinstance(err.value, ssl.SSLEOFError) or "TLSV1_ALERT_PROTOCOL_VERSION" in str(err.value), err.value
    # TLS 1.2 exactly is accepted.
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"


def test_without_the_ca_certificate_verification_fails(server):
    with pytest.raises(urllib.error.URLError) as err:
        _get(server, ssl.create_default_context())
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
    # A certificate from another CA is not trusted either.
    other = trustme.CA()
    context = ssl.create_default_context()
    other.configure_trust(context)
    with pytest.raises(urllib.error.URLError) as err:
        _get(server, context)
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_to_the_tls_port_fails(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/v1/Trunks", headers=AUTH)
            response = conn.getresponse()
            # Whatever came back, it is no API answer.
            assert response.status != 200
            raise http.client.HTTPException(f"plain HTTP answered {response.status}")
    finally:
        conn.close()
    # The server is still serving TLS afterwards.
    assert server.proc.poll() is None


def test_twilio_client_over_https(server, ca_file):
    http_client = TwilioHttpClient()
    http_client.session.verify = str(ca_file)
    http_client.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace verify
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http_client)
    base = f"https://127.0.0.1:{server.api_port}"
    client.trunking.base_url = client.api.base_url = base
    trunk = client.trunking.v1.trunks.create(friendly_name="over TLS", domain_name="tls.example.com")
    assert trunk.sid.startswith("TK") and trunk.url == f"{base}/v1/Trunks/{trunk.sid}"
    acl = client.api.v2010.account.sip.ip_access_control_lists.create(friendly_name="tls")
    client.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
    assert [a.sid for a in client.trunking.v1.trunks(trunk.sid).ip_access_control_lists.list()] == [acl.sid]


def test_serve_refuses_a_non_loopback_api_without_tls(tmp_path, pbx_port):
    # 192.0.2.1 (TEST-NET-1) is not an address of this host: nothing could
    # be exposed even if the check were missing.
    config = _tls_config(tmp_path, pbx_port, '[api]\nlisten = "192.0.2.1:0"\n')
    proc = subprocess.Popen([*SIPGATE, "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "api.listen: 192.0.2.1 is not a loopback address" in err
    assert "API on" not in err
