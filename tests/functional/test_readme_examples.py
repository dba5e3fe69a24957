"""The README's examples of calling the deployed API, run as written against a local server.

Each example is the fenced block after a `<!-- example: NAME -->` line. They run unchanged
against `inferstack serve` on 127.0.0.1 behind a small recording proxy that stands in for
API Gateway: it strips the stage from the path (as API Gateway does) and records what each
example sent, so the test checks what the local server ignores: a SigV4 signature that
botocore's signer recomputes to the same value (for execute-api, in the example's region), and
the API key header. Credentials are fake and come from environment variables.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.contract.conftest import running_server
from tests.functional.conftest import ort_reference, outputs_from_json

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
# The examples are run as the README shows them, found by their `<!-- example: ... -->` markers.
EXAMPLES_FILE = ROOT / "README.md"
EXAMPLES = ("sigv4-python", "sigv4-curl", "api-key-python", "api-key-curl")
STAGE = "/prod"
REGION = "eu-west-1"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN"
API_KEY = "d41d8cd98f00b204e9800998ecf8427e-example-key"
# The features every example sends: the demo model's first example row.
FEATURES = [[13.32, 3.24, 2.38, 21.5, 92.0, 1.93, 0.76, 0.45, 1.25, 8.42, 0.55, 1.62, 650.0]]

_BLOCK = re.compile(r"<!-- example: ([\w-]+) -->\s*\n```(\w+)\n(.*?)\n```", re.DOTALL)


def examples() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every marked block in EXAMPLES_FILE."""
    text = EXAMPLES_FILE.read_text()
    return {name: (language, code) for name, language, code in _BLOCK.findall(text)}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response: bytes = b""


@dataclass
class RecordingProxy:
    """API Gateway's part, minus auth: strip the stage, forward, record both directions."""

    upstream: str  # host:port of inferstack serve
    requests: list[Recorded] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                record = Recorded(self.command, self.path, dict(self.headers.items()), body)
                proxy.requests.append(record)
                path = self.path.removeprefix(STAGE) if self.path.startswith(STAGE + "/") else None
                if path is None:  # API Gateway: no such stage
                    self._reply(403, b'{"message": "Forbidden"}', {})
                    return
                skip = {"host", "connection", "content-length", "authorization"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                connection.request(self.command, path, body=body, headers=headers)
                answer = connection.getresponse()
                record.status, record.response = answer.status, answer.read()
                kept = {
                    k: v
                    for k, v in answer.getheaders()
                    if k.lower() not in {"connection", "transfer-encoding", "content-length"}
                }
                connection.close()
                self._reply(record.status, record.response, kept)

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RecordingProxy]]:
    """(INFERSTACK_API_URL, proxy): the demo model behind a stage path, as after a deploy."""
    log = tmp_path_factory.mktemp("readme") / "serve.log"
    with running_server([], log, ["wine"]) as server:
        proxy = RecordingProxy(server.url)
        address = proxy.start()
        try:
            yield f"http://{address}{STAGE}", proxy
        finally:
            proxy.stop()


def _run(name: str, api_url: str, tmp_path: Path) -> str:
    language, code = examples()[name]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        # Only these credentials, never a profile of the machine.
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_REGION": REGION,
        "INFERSTACK_API_URL": api_url,
        "INFERSTACK_API_KEY": API_KEY,
    }
    if language == "python":
        command = [sys.executable, "-c", code]
    else:
        assert language == "bash", language
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed on this machine")
        command = ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _infer_requests(proxy: RecordingProxy, since: int) -> list[Recorded]:
    found = [r for r in proxy.requests[since:] if r.path.endswith("/v2/models/wine/infer")]
    assert found, "the example sent no inference request"
    return found


def _assert_signed(record: Recorded) -> None:
    """The request carries SigV4 for execute-api that botocore's signer reproduces."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {k.lower(): v for k, v in record.headers.items()}
    authorization = headers.get("authorization", "")
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?"
        r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})",
        authorization,
    )
    assert match, f"no SigV4 Authorization header: {authorization!r}"
    key, day, region, service, signed, signature = match.groups()
    assert (key, region, service) == (ACCESS_KEY, REGION, "execute-api")
    assert headers["x-amz-date"].startswith(day)
    assert headers.get("x-amz-security-token") == SESSION_TOKEN
    names = signed.split(";")
    assert {"host", "x-amz-date"} <= set(names)
    request = AWSRequest(
        method=record.method,
        url=f"http://{headers['host']}{record.path}",
        data=record.body,
        headers={name: headers[name] for name in names},
    )
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), service, region)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    assert signature == expected, "the signature does not verify"


def _assert_right_answer(outputs: dict[str, np.ndarray]) -> None:
    reference = ort_reference(np.asarray(FEATURES, dtype=np.float32))
    np.testing.assert_array_equal(outputs["label"], reference["label"])
    np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], rtol=1e-5)


def test_every_example_is_in_the_readme() -> None:
    assert set(examples()) == set(EXAMPLES)


@pytest.mark.parametrize("name", ["sigv4-python", "sigv4-curl"])
def test_sigv4_examples_sign_and_get_the_answer(
    name: str, api: tuple[str, RecordingProxy], tmp_path: Path
) -> None:
    api_url, proxy = api
    since = len(proxy.requests)
    stdout = _run(name, api_url, tmp_path)
    (record,) = _infer_requests(proxy, since)
    _assert_signed(record)
    assert record.status == 200
    printed = json.loads(stdout)
    document = {"outputs": printed} if isinstance(printed, list) else printed
    _assert_right_answer(outputs_from_json(document))


@pytest.mark.parametrize("name", ["api-key-python", "api-key-curl"])
def test_api_key_examples_send_the_key_and_get_the_answer(
    name: str, api: tuple[str, RecordingProxy], tmp_path: Path
) -> None:
    api_url, proxy = api
    since = len(proxy.requests)
    stdout = _run(name, api_url, tmp_path)
    (record,) = _infer_requests(proxy, since)
    headers = {k.lower(): v for k, v in record.headers.items()}
    assert headers.get("x-api-key") == API_KEY
    assert "authorization" not in headers
    assert record.status == 200
    if name == "api-key-python":  # tritonclient: binary tensors; it prints the label
        reference = ort_reference(np.asarray(FEATURES, dtype=np.float32))
        assert json.loads(stdout) == reference["label"].tolist()
    else:
        _assert_right_answer(outputs_from_json(json.loads(stdout)))
