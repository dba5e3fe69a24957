"""The `inferstack` console script as a user runs it: defaults, readiness, bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tritonclient.http as httpclient

from inferstack.demo import demo_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from tests.contract.conftest import ServerProcess

CONSOLE_SCRIPT = Path(sys.executable).with_name("inferstack")


def test_console_script_serves_demo_model_by_default(
    server_launcher: Callable[..., AbstractContextManager[ServerProcess]],
    tmp_path: Path,
    reference: Callable[..., dict[str, np.ndarray]],
) -> None:
    """`inferstack serve` with no --model serves the bundled "wine" model; with every
    model loaded the server reports ready (the positive case of server readiness)."""
    assert CONSOLE_SCRIPT.is_file(), "the inferstack console script is not installed"
    log = tmp_path / "serve.log"
    with server_launcher([], log, ["wine"], console_script=True) as server:
        client = httpclient.InferenceServerClient(url=server.url)
        try:
            assert client.is_server_live()
            assert client.is_server_ready()
            assert client.get_model_repository_index() == [
                {"name": "wine", "state": "READY", "version": "1"}
            ]
            example = json.loads((demo_dir() / "example_request.json").read_text())
            rows = np.asarray(example["inputs"][0]["data"], dtype=np.float32)
            tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=False)
            result = client.infer("wine", [tensor])
            expected = reference("wine", features=rows)
            np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
            np.testing.assert_allclose(
                result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6
            )
        finally:
            client.close()
    # The start-up banner tells the user where the server is.
    assert f"serving wine at http://{server.url}" in server.log()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "wine"], "NAME=PATH"),
        (["--model", "wine=/nonexistent/wine.onnx"], "no file at"),
        (["--model", "a={demo}", "--model", "a={demo}"], "given twice"),
        (["--port", "not-a-port"], "invalid int value"),
    ],
    ids=["no-equals", "missing-file", "duplicate-name", "bad-port"],
)
def test_bad_arguments_exit_with_usage_error(args: list[str], message: str) -> None:
    demo = str(demo_dir() / "wine.onnx")
    completed = subprocess.run(
        [str(CONSOLE_SCRIPT), "serve", *(a.format(demo=demo) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2, completed
    assert message in completed.stderr
    assert "usage: inferstack" in completed.stderr
    assert "Traceback" not in completed.stderr
