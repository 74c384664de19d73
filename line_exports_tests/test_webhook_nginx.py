"""The shipped nginx example (``examples/nginx/line_oa_webhook.conf``) really works.

A real nginx runs the example as shipped, with only the listen port, the certificate (a
self-signed one made here) and the receiver's port replaced, in front of a real receiver:
signed requests get through with their bytes unchanged, oversize bodies and other methods are
refused by nginx, and a client that trickles its headers is cut at nginx's header timeout.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import requests
import urllib3

from line_exports.webhook.spool import SpoolReader

try:  # works whether or not line_exports_tests becomes a package
    from line_exports_tests.webhook_helpers import (
        base_event,
        body_of,
        free_port,
        make_source,
        running_server,
        signed_headers,
    )
except ImportError:
    from webhook_helpers import (
        base_event,
        body_of,
        free_port,
        make_source,
        running_server,
        signed_headers,
    )

SECRET = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nginx" / "line_oa_webhook.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

pytestmark = pytest.mark.skipif(
    NGINX is None or shutil.which("openssl") is None,
    reason="needs nginx and openssl (.ci/run installs Debian's nginx-light)",
)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LINE_CHANNEL_SECRET_SHOP_OA", SECRET)


def _nginx_conf(tmp_path: Path, listen_port: int, receiver_port: int) -> Path:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in [
        ("listen 443 ssl;", f"listen 127.0.0.1:{listen_port} ssl;"),
        ("/etc/ssl/certs/hooks.example.com.pem", str(cert)),
        ("/etc/ssl/private/hooks.example.com.key", str(key)),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{receiver_port};"),
    ]:
        assert old in text, f"the example no longer has {old!r}"
        text = text.replace(old, new)
    site = tmp_path / "line_oa_webhook.conf"
    site.write_text(text, encoding="utf-8")
    main = tmp_path / "nginx.conf"
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    main.write_text(
        f"daemon off;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'} warn;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp}/body;\n"
        f"  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n"
        f"  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n"
        f"  include {site};\n}}\n",
        encoding="utf-8",
    )
    return main


def test_the_example_nginx_config_proxies_line_and_stops_slow_or_large_clients(
    tmp_path: Path,
) -> None:
    assert NGINX is not None
    source = make_source()
    spool = tmp_path / "spool.sqlite3"
    with running_server([source], spool) as url:
        receiver_port = int(url.rsplit(":", 1)[1])
        port = free_port()
        conf = _nginx_conf(tmp_path, port, receiver_port)
        check = subprocess.run(
            [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            base = f"https://127.0.0.1:{port}"
            endpoint = f"{base}/v1/task/{source.source_id}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                deadline = time.monotonic() + 20
                while True:
                    try:
                        requests.get(f"{base}/", verify=False, timeout=1)
                        break
                    except requests.ConnectionError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                body = body_of([base_event("message", 1, message={"id": "1", "type": "text",
                                                                    "text": "こんにちは"})])  # fmt: skip
                ok = requests.post(
                    endpoint, data=body, headers=signed_headers(SECRET, body), verify=False,
                    timeout=5,
                )  # fmt: skip
                assert ok.status_code == 200, ok.text
                big = b"x" * (1024 * 1024 + 1)
                over = requests.post(
                    endpoint, data=big, headers=signed_headers(SECRET, big), verify=False,
                    timeout=5,
                )  # fmt: skip
                assert over.status_code == 413
                assert requests.get(endpoint, verify=False, timeout=5).status_code == 403
                assert requests.post(f"{base}/other", verify=False, timeout=5).status_code == 404

            # A client that trickles its headers (after a proper TLS handshake) is cut by
            # nginx's 5 s client_header_timeout, never reaching the receiver.
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with tls.wrap_socket(raw, server_hostname="localhost") as slow:
                started = time.monotonic()
                slow.sendall(f"POST /v1/task/{source.source_id} HTTP/1.1\r\n".encode())
                slow.settimeout(1)
                held = 0.0
                while held < 20:
                    try:
                        if not slow.recv(1024):
                            break
                    except TimeoutError:
                        slow.sendall(b"X-Slow: 1\r\n")  # one more header line each second
                    except (ConnectionError, ssl.SSLError):
                        break
                    held = time.monotonic() - started
                held = time.monotonic() - started
            assert 3 < held < 12, f"nginx held a stalled client for {held:.1f}s"
        finally:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(timeout=10)
    with SpoolReader(spool) as reader:
        (kept,) = list(reader.iter_all(source.source_id))
    assert kept.body == body  # the signature was checked on the exact bytes LINE sent
