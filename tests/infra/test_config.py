"""Per-environment configuration: the shipped files load; a bad one fails with file, key, why."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import ENVIRONMENTS_DIR, ConfigError, Target, load_environment

GOOD_MODEL = """
[[models]]
name = "wine"
target = "lambda"
"""


def write(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.toml").write_text(text)


def test_shipped_environments_cover_every_target() -> None:
    targets = set()
    for path in sorted(ENVIRONMENTS_DIR.glob("*.toml")):
        config = load_environment(path.stem)
        targets |= {m.target for m in config.models}
    assert targets == set(Target)
    prod = load_environment("prod")
    assert any(getattr(m, "provisioned_concurrency", 0) > 0 for m in prod.models)
    assert prod.removal_policy == "retain"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD_MODEL + "memory_mb = 20000\n",
            "bad.toml: models.0.memory_mb: Input should be less than or equal to 10240 (got 20000)",
        ),
        (
            GOOD_MODEL + "colour = 'blue'\n",
            "bad.toml: models.0.colour: Extra inputs are not permitted",
        ),
        (
            GOOD_MODEL.replace('"lambda"', '"fargate"'),
            "bad.toml: models.0: Input tag 'fargate' found using 'target' does not match",
        ),
        (
            GOOD_MODEL + "reserved_concurrency = 2\nprovisioned_concurrency = 3\n",
            "bad.toml: models.0: provisioned_concurrency cannot exceed reserved_concurrency",
        ),
        (
            "log_retention_days = 10\n" + GOOD_MODEL,
            "bad.toml: log_retention_days: Input should be 1, 3, 5, 7, 14",
        ),
        ("", "bad.toml: models: Field required"),
        (
            GOOD_MODEL
            + '\n[[models]]\nname = "r/x"\ntarget = "sagemaker"\n'
            + 'instance_type = "ml.g5.xlarge"\n',
            "bad.toml: models.1.name: model names are 1 to 48 characters: letters, digits, "
            "'_', '-' and '.', starting and ending with a letter or digit (got 'r/x')",
        ),
        (
            GOOD_MODEL + "timeout_s = 29\n",
            "bad.toml: models.0.timeout_s: at most 26 s: API Gateway stops waiting after 29 s "
            "and answers 504 while the function runs on",
        ),
        (
            GOOD_MODEL + GOOD_MODEL.replace('"wine"', '"Wine"'),
            "bad.toml: (top level): models 'wine' and 'Wine' both become 'wine' in AWS "
            "resource names",
        ),
        (
            GOOD_MODEL
            + '\n[[models]]\nname = "rn"\ntarget = "sagemaker"\n'
            + 'instance_type = "g5.xlarge"\n',
            "bad.toml: models.1: SageMaker instance types start with 'ml.'",
        ),
        (
            GOOD_MODEL + GOOD_MODEL,
            "bad.toml: (top level): model names must be unique; repeated: ['wine']",
        ),
        (
            '[api]\nauth = "iam"\n[api.quota]\nlimit = 5\n' + GOOD_MODEL,
            "bad.toml: api: quota applies",
        ),
        (
            GOOD_MODEL + "[models.canary]\nmax_error_rate = 5\n",
            "bad.toml: models.0.canary.max_error_rate: a fraction of the canary's requests, "
            "from 0 to 1 (0.01 is 1%), not a percentage (got 5)",
        ),
        (
            GOOD_MODEL + "[models.canary]\nbake_minutes = 120\n",
            "bad.toml: models.0.canary.bake_minutes: at most 40 minutes: a rollout ends after "
            "3 hours, and may first wait up to 2 hours for another rollout of the model",
        ),
        (
            GOOD_MODEL + "[models.canary]\nweight_percent = 80\n",
            "bad.toml: models.0.canary.weight_percent: Input should be less than or equal to 50",
        ),
        (
            GOOD_MODEL + "[models.canary]\nbake_minute = 10\n",
            "bad.toml: models.0.canary.bake_minute: Extra inputs are not permitted",
        ),
        (
            GOOD_MODEL + "[models.canary]\nmax_p99_ms = 0\n",
            "bad.toml: models.0.canary.max_p99_ms: Input should be greater than 0",
        ),
        ("models = [", "bad.toml: not valid TOML"),
        ('name = "other"\n' + GOOD_MODEL, "bad.toml: name: expected 'bad' (the file's name)"),
    ],
)
def test_a_wrong_setting_names_file_key_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    write(tmp_path, "bad", text)
    with pytest.raises(ConfigError) as caught:
        load_environment("bad", tmp_path)
    assert expected in str(caught.value)


def test_a_canary_table_turns_the_canary_on_with_its_defaults(tmp_path: Path) -> None:
    write(tmp_path, "qa", GOOD_MODEL + "[models.canary]\n")
    (model,) = load_environment("qa", tmp_path).models
    assert model.target is Target.LAMBDA
    assert model.canary is not None
    assert model.canary.model_dump() == {
        "weight_percent": 10,
        "bake_minutes": 10,
        "max_error_rate": 0.01,
        "max_p99_ms": None,
        "min_requests": 0,
    }
    write(tmp_path, "none", GOOD_MODEL)
    (plain,) = load_environment("none", tmp_path).models
    assert plain.target is Target.LAMBDA and plain.canary is None


def test_a_missing_environment_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "dev", GOOD_MODEL)
    with pytest.raises(ConfigError, match=r"qa\.toml: no such file \(environments: dev\)"):
        load_environment("qa", tmp_path)


def test_synth_fails_on_a_bad_environment_with_the_message(tmp_path: Path) -> None:
    """`cdk synth -c env=...` runs infra.app: it must print the error and exit non-zero."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "infra.app"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "CDK_CONTEXT_JSON": '{"env": "nope"}',
            "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        },
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "nope.toml: no such file" in result.stderr
    assert "Traceback" not in result.stderr
