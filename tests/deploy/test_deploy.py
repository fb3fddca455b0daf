"""The deploy helper: --dry-run prints exactly the calls a real run makes (checked with Stubber)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploy.cli import main
from deploy.plan import GPU_INFERENCE_AMI
from tests.deploy.conftest import StubbedAws

NOW = datetime(2026, 11, 22, 19, 30, 5, tzinfo=UTC)
SUFFIX = "20261122-193005"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gan-serve:gpu"
ROLE = "arn:aws:iam::123456789012:role/gan-serve-sagemaker"
KEY = f"models/gan/{SUFFIX}/model.tar.gz"
RESOURCE = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": "endpoint/gan/variant/AllTraffic",
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}


class SameBytes:
    """Matches the file object deploy passes as an S3 Body when it holds exactly `data`."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        read = getattr(other, "read", None)
        if read is None:
            return False
        content = read()
        other.seek(0)  # type: ignore[attr-defined]
        return bool(content == self.data)

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"<file holding {len(self.data)} bytes>"


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"\x1f\x8b not really a tarball, S3 does not care")
    return path


def base_args(tarball: Path) -> list[str]:
    return [
        "--endpoint-name", "gan",
        "--image", IMAGE,
        "--role", ROLE,
        "--model-data", str(tarball),
        "--bucket", "my-bucket",
        "--prefix", "models",
        "--instance-type", "ml.g5.xlarge",
        "--initial-instance-count", "2",
        "--min-capacity", "1",
        "--max-capacity", "6",
        "--target-invocations", "250",
        "--env", "GAN_SERVE_LOG_FORMAT=json",
        "--env", "GAN_SERVE_TILE_SIZE=512",
        "--tag", "team=vision",
    ]  # fmt: skip


def expected_calls(tarball: Path) -> list[dict[str, Any]]:
    """Every call of a full deployment with `base_args`, in order, with every parameter."""
    tags = [{"Key": "team", "Value": "vision"}]
    return [
        {
            "service": "s3",
            "operation": "put_object",
            "params": {"Bucket": "my-bucket", "Key": KEY, "Body": str(tarball)},
        },
        {
            "service": "sagemaker",
            "operation": "create_model",
            "params": {
                "ModelName": f"gan-{SUFFIX}",
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {
                    "Image": IMAGE,
                    "ModelDataUrl": f"s3://my-bucket/{KEY}",
                    "Environment": {"GAN_SERVE_LOG_FORMAT": "json", "GAN_SERVE_TILE_SIZE": "512"},
                },
                "Tags": tags,
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint_config",
            "params": {
                "EndpointConfigName": f"gan-{SUFFIX}",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": f"gan-{SUFFIX}",
                        "InstanceType": "ml.g5.xlarge",
                        "InitialInstanceCount": 2,
                        "InitialVariantWeight": 1.0,
                        "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                        "ModelDataDownloadTimeoutInSeconds": 600,
                        "InferenceAmiVersion": GPU_INFERENCE_AMI,
                    }
                ],
                "Tags": tags,
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint",
            "params": {"EndpointName": "gan", "EndpointConfigName": f"gan-{SUFFIX}", "Tags": tags},
        },
        {"service": "sagemaker", "waiter": "endpoint_in_service", "params": {"EndpointName": "gan"}},
        {
            "service": "application-autoscaling",
            "operation": "register_scalable_target",
            "params": {**RESOURCE, "MinCapacity": 1, "MaxCapacity": 6},
        },
        {
            "service": "application-autoscaling",
            "operation": "put_scaling_policy",
            "params": {
                "PolicyName": "gan-invocations-per-instance",
                **RESOURCE,
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 250.0,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                    "ScaleInCooldown": 300,
                    "ScaleOutCooldown": 60,
                },
            },
        },
    ]


def describe_endpoint(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "EndpointName": "gan",
        "EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/gan",
        "EndpointConfigName": f"gan-{SUFFIX}",
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        **extra,
    }


RESPONSES: dict[str, dict[str, Any]] = {
    "put_object": {"ETag": '"abc"'},
    "create_model": {"ModelArn": f"arn:aws:sagemaker:eu-west-1:123456789012:model/gan-{SUFFIX}"},
    "create_endpoint_config": {
        "EndpointConfigArn": f"arn:aws:sagemaker:eu-west-1:123456789012:endpoint-config/gan-{SUFFIX}"
    },
    "create_endpoint": {"EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/gan"},
    "update_endpoint": {"EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/gan"},
    "register_scalable_target": {},
    "put_scaling_policy": {
        "PolicyARN": "arn:aws:autoscaling:eu-west-1:123456789012:scalingPolicy:x",
        "Alarms": [],
    },
}


def stub_calls(aws: StubbedAws, calls: list[dict[str, Any]], tarball: Path) -> None:
    """Queue each call with its exact expected parameters; a waiter is one DescribeEndpoint."""
    for call in calls:
        stubber = aws.stubbers[call["service"]]
        params = dict(call["params"])
        if "waiter" in call:
            stubber.add_response("describe_endpoint", describe_endpoint("InService"), params)
            continue
        if call["operation"] == "put_object":
            params["Body"] = SameBytes(tarball.read_bytes())
        stubber.add_response(call["operation"], RESPONSES[call["operation"]], params)


def no_clients(service: str) -> Any:
    raise AssertionError(f"--dry-run created a {service} client")


def test_dry_run_prints_every_call_and_makes_none(tarball: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*base_args(tarball), "--dry-run"], client_for=no_clients, now=NOW) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == expected_calls(tarball)


def test_real_run_makes_exactly_the_dry_run_calls(
    tarball: Path, aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base_args(tarball), "--dry-run"], client_for=no_clients, now=NOW) == 0
    dry_run = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stub_calls(aws, dry_run, tarball)

    assert main(base_args(tarball), client_for=aws.client_for, now=NOW) == 0

    aws.assert_all_called()
    out = capsys.readouterr().out
    assert "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/gan" in out
    assert "deployed: endpoint gan" in out


def test_update_with_an_s3_model_skips_the_upload(
    aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--endpoint-name", "gan", "--image", IMAGE, "--role", ROLE,
        "--model-data", "s3://my-bucket/existing/model.tar.gz",
        "--instance-type", "ml.c7i.2xlarge", "--update", "--wait", "--no-autoscaling",
        "--model-name", "gan-v2", "--endpoint-config-name", "gan-v2-config",
    ]  # fmt: skip
    calls = [
        {
            "service": "sagemaker",
            "operation": "create_model",
            "params": {
                "ModelName": "gan-v2",
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://my-bucket/existing/model.tar.gz"},
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint_config",
            "params": {
                "EndpointConfigName": "gan-v2-config",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "gan-v2",
                        "InstanceType": "ml.c7i.2xlarge",  # a CPU instance: SageMaker's default AMI
                        "InitialInstanceCount": 1,
                        "InitialVariantWeight": 1.0,
                        "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                        "ModelDataDownloadTimeoutInSeconds": 600,
                    }
                ],
            },
        },
        {
            "service": "sagemaker",
            "operation": "update_endpoint",
            "params": {"EndpointName": "gan", "EndpointConfigName": "gan-v2-config"},
        },
        {"service": "sagemaker", "waiter": "endpoint_in_service", "params": {"EndpointName": "gan"}},
    ]
    assert main([*args, "--dry-run"], client_for=no_clients) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == calls

    stub_calls(aws, calls, Path("unused"))
    assert main(args, client_for=aws.client_for) == 0
    aws.assert_all_called()
    assert aws.asked == ["sagemaker"]


def test_aws_error_is_one_clear_line_and_exit_1(
    tarball: Path, aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = expected_calls(tarball)
    stub_calls(aws, calls[:1], tarball)
    aws.stubbers["sagemaker"].add_client_error(
        "create_model",
        service_error_code="ValidationException",
        service_message="Could not access model data at s3://my-bucket/models.",
        http_status_code=400,
        expected_params=calls[1]["params"],
    )

    assert main(base_args(tarball), client_for=aws.client_for, now=NOW) == 1

    aws.assert_all_called()
    err = capsys.readouterr().err
    assert (
        "gan-deploy: error: sagemaker create_model failed: ValidationException: "
        "Could not access model data at s3://my-bucket/models." in err
    )
    assert "Traceback" not in err


def test_failed_endpoint_reports_sagemakers_reason(
    tarball: Path, aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = expected_calls(tarball)
    stub_calls(aws, calls[:4], tarball)
    aws.stubbers["sagemaker"].add_response(
        "describe_endpoint",
        describe_endpoint(
            "Failed", FailureReason="The primary container did not pass the ping health check."
        ),
        {"EndpointName": "gan"},
    )

    assert main(base_args(tarball), client_for=aws.client_for, now=NOW) == 1

    aws.assert_all_called()
    err = capsys.readouterr().err
    assert "did not pass the ping health check" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--bucket", ""], "--bucket is needed"),
        (["--model-data", "/nonexistent/model.tar.gz"], "no such file"),
        (["--role", "gan-role"], "is not an ARN"),
        (["--endpoint-name", "gan_endpoint"], "not a valid SageMaker name"),
        (["--initial-instance-count", "9"], "within the autoscaling range [1, 6]"),
        (["--env", "NOEQUALS"], "expected KEY=VALUE"),
    ],
)
def test_bad_settings_fail_before_any_call(
    tarball: Path, change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base_args(tarball), *change], client_for=no_clients) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("gan-deploy: error: ")
