"""TLS mistakes named as such: a daemon given a file that is not a certificate, and a plaintext
proxy pointed at a TLS daemon."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from telemetry.daemon import DaemonStartError
from telemetry.errors import TlsRequiredError
from telemetry.proxy import TelemetryGrpcProxy

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True, timeout=30)
    assert made.returncode == 0, made.stderr
    return cert, key


async def test_a_file_that_is_not_a_certificate_is_named(start_daemon, certificate, tmp_path: Path) -> None:
    _, key = certificate
    not_a_cert = tmp_path / "notes.pem"
    not_a_cert.write_text("this is not a certificate\n")
    with pytest.raises(DaemonStartError) as caught:
        await start_daemon(tls_cert=str(not_a_cert), tls_key=str(key))
    message = str(caught.value)
    assert str(not_a_cert) in message and "PEM certificate" in message
    assert "address" not in message


@pytest.mark.parametrize("run_id", ["run-tls", None])
async def test_a_plaintext_proxy_against_a_tls_daemon_is_told_to_use_tls(start_daemon, certificate,
                                                                        tmp_path: Path, run_id) -> None:
    cert, key = certificate
    daemon = await start_daemon(tls_cert=str(cert), tls_key=str(key))
    plaintext = TelemetryGrpcProxy(daemon.address, spool_dir=tmp_path / "spool")
    with pytest.raises(TlsRequiredError, match="tls=True") as caught:
        async with plaintext.session(run_id):
            pass
    assert daemon.address in str(caught.value)
