"""`gan-deploy transform`: a Batch Transform job over JSON Lines; --dry-run is what a real run calls."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploy.cli import main
from tests.deploy.conftest import StubbedAws
from tests.deploy.test_deploy import SameBytes, no_clients

NOW = datetime(2026, 11, 23, 9, 15, 0, tzinfo=UTC)
JOB = "gan-transform-20261123-091500"
ROLE = "arn:aws:iam::123456789012:role/gan-serve-sagemaker"
CPU_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gan-serve:cpu"
GPU_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gan-serve:gpu"
JOB_ARN = f"arn:aws:sagemaker:eu-west-1:123456789012:transform-job/{JOB}"


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"\x1f\x8b a model repository")
    return path


def args(tarball: Path) -> list[str]:
    return [
        "transform",
        "--input", "s3://my-bucket/requests/",
        "--output", "s3://my-bucket/images/",
        "--image", CPU_IMAGE, "--role", ROLE,
        "--model-data", str(tarball), "--bucket", "my-bucket",
        "--instance-count", "2", "--wait",
    ]  # fmt: skip


def expected_calls(tarball: Path) -> list[dict[str, Any]]:
    key = f"gan-serve/{JOB}/model.tar.gz"
    return [
        {
            "service": "s3",
            "operation": "put_object",
            "params": {"Bucket": "my-bucket", "Key": key, "Body": str(tarball)},
        },
        {
            "service": "sagemaker",
            "operation": "create_model",
            "params": {
                "ModelName": JOB,
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {
                    "Image": CPU_IMAGE,
                    "ModelDataUrl": f"s3://my-bucket/{key}",
                    "Environment": {
                        "GAN_SERVE_INVOCATION_TIMEOUT_S": "600",
                        "GAN_SERVE_SAGEMAKER_MODE": "batch",
                    },
                },
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_transform_job",
            "params": {
                # No MaxConcurrentTransforms, MaxPayloadInMB, BatchStrategy: the container's
                # GET /execution-parameters answers them.
                "TransformJobName": JOB,
                "ModelName": JOB,
                "ModelClientConfig": {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1},
                "TransformInput": {
                    "DataSource": {
                        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://my-bucket/requests/"}
                    },
                    "ContentType": "application/jsonlines",
                    "SplitType": "Line",
                    "CompressionType": "None",
                },
                "TransformOutput": {
                    "S3OutputPath": "s3://my-bucket/images/",
                    "Accept": "application/jsonlines",
                    "AssembleWith": "Line",
                },
                "TransformResources": {"InstanceType": "ml.c7i.2xlarge", "InstanceCount": 2},
            },
        },
        {
            "service": "sagemaker",
            "waiter": "transform_job_completed_or_stopped",
            "params": {"TransformJobName": JOB},
        },
    ]


def describe_job(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "TransformJobName": JOB,
        "TransformJobArn": JOB_ARN,
        "TransformJobStatus": status,
        "ModelName": JOB,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://my-bucket/requests/"}}
        },
        "TransformResources": {"InstanceType": "ml.c7i.2xlarge", "InstanceCount": 2},
        "CreationTime": NOW,
        **extra,
    }


def stub_calls(aws: StubbedAws, calls: list[dict[str, Any]], tarball: Path, final: dict[str, Any]) -> None:
    responses = {
        "put_object": {"ETag": '"abc"'},
        "create_model": {"ModelArn": f"arn:aws:sagemaker:eu-west-1:123456789012:model/{JOB}"},
        "create_transform_job": {"TransformJobArn": JOB_ARN},
    }
    for call in calls:
        stubber = aws.stubbers[call["service"]]
        params = dict(call["params"])
        if "waiter" in call:
            stubber.add_response("describe_transform_job", final, params)
            continue
        if call["operation"] == "put_object":
            params["Body"] = SameBytes(tarball.read_bytes())
        stubber.add_response(call["operation"], responses[call["operation"]], params)


def test_dry_run_prints_the_job_and_makes_no_call(tarball: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args(tarball), "--dry-run"], client_for=no_clients, now=NOW) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == expected_calls(tarball)


def test_real_run_makes_exactly_the_dry_run_calls_and_waits(
    tarball: Path, aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    stub_calls(aws, expected_calls(tarball), tarball, describe_job("Completed"))

    assert main(args(tarball), client_for=aws.client_for, now=NOW) == 0

    aws.assert_all_called()
    out = capsys.readouterr().out
    assert JOB_ARN in out
    assert f"completed: transform job {JOB}" in out


def test_explicit_limits_override_the_containers(tarball: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--max-concurrent-transforms", "4", "--max-payload-mb", "20", "--batch-strategy",
             "SingleRecord", "--job-name", "faces-100k", "--instance-type", "ml.g5.2xlarge",
             "--image", GPU_IMAGE]  # fmt: skip
    assert main([*args(tarball), *extra, "--dry-run"], client_for=no_clients, now=NOW) == 0
    job = json.loads(capsys.readouterr().out.splitlines()[2])["params"]
    assert job["TransformJobName"] == job["ModelName"] == "faces-100k"
    assert (job["MaxConcurrentTransforms"], job["MaxPayloadInMB"], job["BatchStrategy"]) == (
        4,
        20,
        "SingleRecord",
    )
    assert job["TransformResources"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2}


def test_a_failed_job_reports_sagemakers_reason(
    tarball: Path, aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = describe_job("Failed", FailureReason="ClientError: See job logs for more information")
    stub_calls(aws, expected_calls(tarball), tarball, failed)

    assert main(args(tarball), client_for=aws.client_for, now=NOW) == 1

    aws.assert_all_called()
    err = capsys.readouterr().err
    assert "SageMaker says: ClientError: See job logs" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--input", "requests/"], "--input 'requests/' is not an s3://bucket[/prefix] URL"),
        (["--max-payload-mb", "101"], "--max-payload-mb must lie within [0, 100]"),
        (["--image", GPU_IMAGE], "needs a GPU and ml.c7i.2xlarge has none"),
        (["--job-name", "faces_100k"], "not a valid SageMaker name"),
        (["--invocation-timeout", "7200"], "--invocation-timeout must lie within [1, 3600]"),
    ],
)
def test_bad_settings_fail_before_any_call(
    tarball: Path, change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args(tarball), *change], client_for=no_clients) == 2
    assert message in capsys.readouterr().err
