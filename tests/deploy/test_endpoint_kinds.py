"""Asynchronous and serverless endpoints: --dry-run prints exactly the calls a real run makes (Stubber)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from deploy.cli import main
from deploy.plan import GPU_INFERENCE_AMI
from tests.deploy.conftest import StubbedAws
from tests.deploy.test_deploy import RESPONSES, describe_endpoint, no_clients

NOW = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
SUFFIX = "20261123-080000"
ROLE = "arn:aws:iam::123456789012:role/gan-serve-sagemaker"
GPU_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gan-serve:gpu"
CPU_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/gan-serve:cpu"
MODEL_DATA = "s3://my-bucket/models/model.tar.gz"
DONE_TOPIC = "arn:aws:sns:eu-west-1:123456789012:gan-done"
FAILED_TOPIC = "arn:aws:sns:eu-west-1:123456789012:gan-failed"
STEP_POLICY_ARN = (
    "arn:aws:autoscaling:eu-west-1:123456789012:scalingPolicy:step:policyName/big-scale-out-from-zero"
)
RESOURCE = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": "endpoint/big/variant/AllTraffic",
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}
ENDPOINT_METRIC = {"Namespace": "AWS/SageMaker", "Dimensions": [{"Name": "EndpointName", "Value": "big"}]}


def dry_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main([*args, "--dry-run"], client_for=no_clients, now=NOW) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def stub(aws: StubbedAws, calls: list[dict[str, Any]], responses: dict[str, Any]) -> None:
    """Queue each call with its exact parameters; ${call.key} placeholders become what AWS answered.

    A list in `responses` answers successive calls of that operation in turn.
    """
    for call in calls:
        stubber = aws.stubbers[call["service"]]
        if "waiter" in call:
            stubber.add_response("describe_endpoint", describe_endpoint("InService"), call["params"])
            continue
        params = json.loads(
            json.dumps(call["params"]).replace("${scale-out-from-zero.PolicyARN}", STEP_POLICY_ARN)
        )
        response = responses[call["operation"]]
        if isinstance(response, list):
            response = response.pop(0)
        stubber.add_response(call["operation"], response, params)


# --- asynchronous ----------------------------------------------------------------------------------


ASYNC_ARGS = [
    "--endpoint-name", "big", "--image", GPU_IMAGE, "--role", ROLE, "--model-data", MODEL_DATA,
    "--async-output", "s3://my-bucket/async/out",
    "--async-failure-output", "s3://my-bucket/async/failed",
    "--success-topic", DONE_TOPIC, "--error-topic", FAILED_TOPIC,
    "--max-concurrent-invocations", "2", "--max-capacity", "3", "--target-backlog", "4",
]  # fmt: skip


def async_calls() -> list[dict[str, Any]]:
    name = f"big-{SUFFIX}"
    return [
        {
            "service": "sagemaker",
            "operation": "create_model",
            "params": {
                "ModelName": name,
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {
                    "Image": GPU_IMAGE,
                    "ModelDataUrl": MODEL_DATA,
                    "Environment": {"GAN_SERVE_SAGEMAKER_MODE": "async"},
                },
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint_config",
            "params": {
                "EndpointConfigName": name,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": name,
                        "InstanceType": "ml.g5.xlarge",
                        "InitialInstanceCount": 1,
                        "InitialVariantWeight": 1.0,
                        "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                        "ModelDataDownloadTimeoutInSeconds": 600,
                        "InferenceAmiVersion": GPU_INFERENCE_AMI,
                    }
                ],
                "AsyncInferenceConfig": {
                    "OutputConfig": {
                        "S3OutputPath": "s3://my-bucket/async/out",
                        "S3FailurePath": "s3://my-bucket/async/failed",
                        "NotificationConfig": {"SuccessTopic": DONE_TOPIC, "ErrorTopic": FAILED_TOPIC},
                    },
                    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
                },
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint",
            "params": {"EndpointName": "big", "EndpointConfigName": name},
        },
        {"service": "sagemaker", "waiter": "endpoint_in_service", "params": {"EndpointName": "big"}},
        {
            "service": "application-autoscaling",
            "operation": "register_scalable_target",
            "params": {**RESOURCE, "MinCapacity": 0, "MaxCapacity": 3},
        },
        {
            "service": "application-autoscaling",
            "operation": "put_scaling_policy",
            "params": {
                "PolicyName": "big-backlog-per-instance",
                **RESOURCE,
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 4.0,
                    "CustomizedMetricSpecification": {
                        "MetricName": "ApproximateBacklogSizePerInstance",
                        **ENDPOINT_METRIC,
                        "Statistic": "Average",
                    },
                    "ScaleInCooldown": 300,
                    "ScaleOutCooldown": 60,
                },
            },
        },
        {
            "service": "application-autoscaling",
            "operation": "put_scaling_policy",
            "params": {
                "PolicyName": "big-scale-out-from-zero",
                **RESOURCE,
                "PolicyType": "StepScaling",
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ChangeInCapacity",
                    "MetricAggregationType": "Average",
                    "Cooldown": 60,
                    "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
                },
            },
        },
        {
            "service": "cloudwatch",
            "operation": "put_metric_alarm",
            "params": {
                "AlarmName": "big-backlog-without-capacity",
                "AlarmDescription": "Requests wait at big with no instance: start one.",
                "Namespace": "AWS/SageMaker",
                "MetricName": "HasBacklogWithoutCapacity",
                "Dimensions": [{"Name": "EndpointName", "Value": "big"}],
                "Statistic": "Average",
                "Period": 60,
                "EvaluationPeriods": 2,
                "DatapointsToAlarm": 2,
                "Threshold": 1.0,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "missing",
                "AlarmActions": ["${scale-out-from-zero.PolicyARN}"],
            },
        },
    ]


ASYNC_RESPONSES = {
    **RESPONSES,
    "create_model": {"ModelArn": f"arn:aws:sagemaker:eu-west-1:123456789012:model/big-{SUFFIX}"},
    "put_scaling_policy": [
        {"PolicyARN": STEP_POLICY_ARN.replace("step", "tracking").replace("zero", "backlog"), "Alarms": []},
        {"PolicyARN": STEP_POLICY_ARN, "Alarms": []},
    ],
    "put_metric_alarm": {},
}


def test_async_dry_run_plans_s3_output_topics_and_scaling_to_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run(ASYNC_ARGS, capsys) == async_calls()


def test_async_real_run_wires_the_alarm_to_the_step_policy(
    aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = dry_run(ASYNC_ARGS, capsys)
    stub(aws, calls, {**ASYNC_RESPONSES, "put_scaling_policy": list(ASYNC_RESPONSES["put_scaling_policy"])})

    assert main(ASYNC_ARGS, client_for=aws.client_for, now=NOW) == 0

    aws.assert_all_called()  # put_metric_alarm was asked with AlarmActions=[the step policy's ARN]
    assert "deployed: endpoint big" in capsys.readouterr().out


def test_async_with_a_floor_of_one_needs_no_scale_out_alarm(capsys: pytest.CaptureFixture[str]) -> None:
    calls = dry_run([*ASYNC_ARGS, "--min-capacity", "1"], capsys)
    operations = [call.get("operation") for call in calls]
    assert "put_metric_alarm" not in operations
    assert operations.count("put_scaling_policy") == 1
    assert calls[4]["params"]["MinCapacity"] == 1


def test_async_plain_output_only(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--endpoint-name", "big", "--image", GPU_IMAGE, "--role", ROLE, "--model-data", MODEL_DATA,
            "--async-output", "s3://my-bucket/out", "--no-autoscaling"]  # fmt: skip
    calls = dry_run(args, capsys)
    assert calls[1]["params"]["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://my-bucket/out"}
    }
    assert [call.get("operation") for call in calls] == [
        "create_model",
        "create_endpoint_config",
        "create_endpoint",
    ]


# --- serverless ------------------------------------------------------------------------------------


SERVERLESS_ARGS = [
    "--endpoint-name", "small", "--image", CPU_IMAGE, "--role", ROLE, "--model-data", MODEL_DATA,
    "--serverless", "4096", "--max-concurrency", "10", "--provisioned-concurrency", "2", "--wait",
    "--env", "GAN_SERVE_MAX_N=16",
]  # fmt: skip


def serverless_calls() -> list[dict[str, Any]]:
    name = f"small-{SUFFIX}"
    return [
        {
            "service": "sagemaker",
            "operation": "create_model",
            "params": {
                "ModelName": name,
                "ExecutionRoleArn": ROLE,
                "PrimaryContainer": {
                    "Image": CPU_IMAGE,
                    "ModelDataUrl": MODEL_DATA,
                    "Environment": {"GAN_SERVE_MAX_N": "16", "GAN_SERVE_SAGEMAKER_MODE": "serverless"},
                },
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint_config",
            "params": {
                "EndpointConfigName": name,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": name,
                        "ServerlessConfig": {
                            "MemorySizeInMB": 4096,
                            "MaxConcurrency": 10,
                            "ProvisionedConcurrency": 2,
                        },
                    }
                ],
            },
        },
        {
            "service": "sagemaker",
            "operation": "create_endpoint",
            "params": {"EndpointName": "small", "EndpointConfigName": name},
        },
        {"service": "sagemaker", "waiter": "endpoint_in_service", "params": {"EndpointName": "small"}},
    ]


def test_serverless_dry_run_sets_memory_and_concurrency_and_no_autoscaling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert dry_run(SERVERLESS_ARGS, capsys) == serverless_calls()


def test_serverless_real_run_makes_exactly_the_dry_run_calls(
    aws: StubbedAws, capsys: pytest.CaptureFixture[str]
) -> None:
    stub(aws, dry_run(SERVERLESS_ARGS, capsys), RESPONSES)
    assert main(SERVERLESS_ARGS, client_for=aws.client_for, now=NOW) == 0
    aws.assert_all_called()
    assert aws.asked == ["sagemaker"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--serverless", "1000"], "one of 1024, 2048, 3072, 4096, 5120, 6144 MB"),
        (["--image", GPU_IMAGE], "serverless endpoints have no GPU"),
        (["--max-concurrency", "500"], "--max-concurrency must lie within [1, 200]"),
        (["--provisioned-concurrency", "11"], "--provisioned-concurrency must lie within"),
    ],
)
def test_bad_serverless_settings_fail_before_any_call(
    change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SERVERLESS_ARGS, *change], client_for=no_clients) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--async-output", "my-bucket/out"], "is not an s3://bucket[/prefix] URL"),
        (["--success-topic", "arn:aws:sqs:eu-west-1:123456789012:q"], "is not an SNS topic ARN"),
        (["--min-capacity", "2", "--initial-instance-count", "1"], "within the autoscaling range [2, 3]"),
        (["--max-concurrent-invocations", "0"], "--max-concurrent-invocations must be at least 1"),
    ],
)
def test_bad_async_settings_fail_before_any_call(
    change: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ASYNC_ARGS, *change], client_for=no_clients) == 2
    assert message in capsys.readouterr().err


def test_topics_without_async_output_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--endpoint-name", "rt", "--image", GPU_IMAGE, "--role", ROLE, "--model-data", MODEL_DATA,
            "--success-topic", DONE_TOPIC]  # fmt: skip
    assert main(args, client_for=no_clients) == 2
    assert "need --async-output" in capsys.readouterr().err


def test_async_and_serverless_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*ASYNC_ARGS, "--serverless", "2048"], client_for=no_clients)
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
