"""The AWS API calls a deployment makes, as data: printed by --dry-run, run by deploy.execute.

Three kinds of endpoint (`DeployConfig.mode`): real-time (instances, autoscaling on invocations per
instance), asynchronous (`AsyncInferenceConfig`: requests and responses through S3, optional SNS
topics, autoscaling on the queue backlog down to zero instances) and serverless (`ServerlessConfig`:
memory and concurrency, no instances, no GPU). Batch Transform jobs are planned by deploy.transform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

#: SageMaker resource names (model, endpoint config, endpoint, variant, transform job).
SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
NAME_RULE = "letters, digits and '-', at most 63, starting and ending with a letter or digit"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
#: Asynchronous endpoints publish these to CloudWatch (namespace AWS/SageMaker, dimension EndpointName).
BACKLOG_PER_INSTANCE = "ApproximateBacklogSizePerInstance"
BACKLOG_WITHOUT_CAPACITY = "HasBacklogWithoutCapacity"
#: onnxruntime-gpu 1.31 needs CUDA 13, so an NVIDIA driver >= 580: the SageMaker hosting AMI that has it.
#: Without it SageMaker picks an older AMI (driver 535/550) and the CUDA provider cannot start.
GPU_INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"
#: Serverless Inference: memory sizes SageMaker offers, and its concurrency ceiling per endpoint.
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200
#: The service setting that tells gan-serve which SageMaker limits apply (docs/deploy.md).
MODE_VARIABLE = "GAN_SERVE_SAGEMAKER_MODE"

Mode = Literal["realtime", "async", "serverless"]
Service = Literal["s3", "sagemaker", "application-autoscaling", "cloudwatch"]


def is_gpu_instance(instance_type: str) -> bool:
    """ml.g* and ml.p* instances carry NVIDIA GPUs."""
    return instance_type.removeprefix("ml.")[:1] in {"g", "p"}


class PlanError(ValueError):
    """A deployment setting that cannot work; the message says which and why."""


@dataclass(frozen=True)
class DeployConfig:
    """Everything one deployment needs; names left empty are derived from the endpoint name."""

    endpoint_name: str
    image_uri: str
    role_arn: str
    model_data: str  # a local model.tar.gz to upload, or an s3:// URL already holding one
    bucket: str | None = None
    prefix: str = "gan-serve"
    instance_type: str = "ml.g5.xlarge"
    initial_instance_count: int = 1
    variant_name: str = "AllTraffic"
    inference_ami_version: str | None = None  # None: GPU_INFERENCE_AMI on GPU instances, else SageMaker's
    environment: dict[str, str] = field(default_factory=dict)
    model_name: str | None = None
    endpoint_config_name: str | None = None
    update: bool = False
    wait: bool = False
    autoscaling: bool = True
    min_capacity: int | None = None  # None: 1 for real-time, 0 (scale to zero) for asynchronous
    max_capacity: int = 4
    target_invocations_per_instance: float = 100.0
    scale_in_cooldown: int = 300
    scale_out_cooldown: int = 60
    startup_health_check_timeout: int = 600
    model_data_download_timeout: int = 600
    tags: dict[str, str] = field(default_factory=dict)
    # Asynchronous inference: set by an s3:// output location.
    async_output: str | None = None
    async_failure_output: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrent_invocations: int | None = None  # per instance; None: SageMaker's default
    target_backlog_per_instance: float = 5.0
    # Serverless inference: set by a memory size.
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int = 5
    serverless_provisioned_concurrency: int | None = None

    @property
    def mode(self) -> Mode:
        if self.serverless_memory_mb is not None:
            return "serverless"
        return "async" if self.async_output is not None else "realtime"

    @property
    def lowest_capacity(self) -> int:
        if self.min_capacity is not None:
            return self.min_capacity
        return 0 if self.mode == "async" else 1


@dataclass(frozen=True)
class FromResponse:
    """A parameter known only once an earlier call has answered: that call's response[`key`]."""

    call: str  # the `ref` of the earlier ApiCall
    key: str

    def __str__(self) -> str:
        return f"${{{self.call}.{self.key}}}"


@dataclass(frozen=True)
class ApiCall:
    """One boto3 client method call (`kind="call"`) or waiter (`kind="wait"`) with its parameters.

    `ref` names the call for a later FromResponse.
    """

    service: Service
    operation: str
    params: dict[str, Any]
    kind: Literal["call", "wait"] = "call"
    ref: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        key = "waiter" if self.kind == "wait" else "operation"
        return {"service": self.service, key: self.operation, "params": printable(self.params)}


def printable(value: Any) -> Any:
    """`value` with every FromResponse written as ${call.key}, for --dry-run."""
    if isinstance(value, FromResponse):
        return str(value)
    if isinstance(value, dict):
        return {key: printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value


def timestamp(now: datetime | None = None) -> str:
    """A name suffix that sorts by time and is valid in SageMaker names."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def check_name(label: str, name: str) -> None:
    if not SAGEMAKER_NAME.fullmatch(name):
        raise PlanError(f"{label} {name!r} is not a valid SageMaker name ({NAME_RULE})")


def check_s3_url(option: str, url: str | None) -> None:
    if url is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", url):
        raise PlanError(f"{option} {url!r} is not an s3://bucket[/prefix] URL")


def check_model_source(model_data: str, bucket: str | None, role_arn: str) -> None:
    """A model.tar.gz that can be uploaded or is already in S3, and a role that is an ARN."""
    if not model_data.startswith("s3://"):
        if not bucket:
            raise PlanError("--bucket is needed to upload a local model.tar.gz (or pass an s3:// URL)")
        if not Path(model_data).is_file():
            raise PlanError(f"{model_data}: no such file (make one with `gan-export package`)")
    if not role_arn.startswith("arn:"):
        raise PlanError(f"execution role {role_arn!r} is not an ARN (arn:aws:iam::<account>:role/<name>)")


def tag_list(tags: dict[str, str]) -> dict[str, Any]:
    """The `Tags` parameter, or nothing when there are none."""
    listed = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
    return {"Tags": listed} if listed else {}


def plan_model(
    *,
    name: str,
    image_uri: str,
    role_arn: str,
    model_data: str,
    bucket: str | None,
    key_prefix: str,
    environment: dict[str, str],
    tags: dict[str, str],
) -> list[ApiCall]:
    """Upload model.tar.gz (unless it is an s3:// URL already) and create the SageMaker model."""
    calls: list[ApiCall] = []
    if model_data.startswith("s3://"):
        model_data_url = model_data
    else:
        key = f"{key_prefix.strip('/')}/model.tar.gz".lstrip("/")
        model_data_url = f"s3://{bucket}/{key}"
        calls.append(ApiCall("s3", "put_object", {"Bucket": bucket, "Key": key, "Body": model_data}))
    container: dict[str, Any] = {"Image": image_uri, "ModelDataUrl": model_data_url}
    if environment:
        container["Environment"] = dict(sorted(environment.items()))
    calls.append(
        ApiCall(
            "sagemaker",
            "create_model",
            {
                "ModelName": name,
                "ExecutionRoleArn": role_arn,
                "PrimaryContainer": container,
                **tag_list(tags),
            },
        )
    )
    return calls


def with_mode(environment: dict[str, str], mode: str) -> dict[str, str]:
    """The container environment with GAN_SERVE_SAGEMAKER_MODE (real-time, the default, stays unset)."""
    if mode == "realtime" or MODE_VARIABLE in environment:
        return environment
    return {**environment, MODE_VARIABLE: mode}


def plan_deployment(config: DeployConfig, now: datetime | None = None) -> list[ApiCall]:
    """Every call, in order: upload, model, endpoint config, endpoint, wait, autoscaling."""
    _check(config)
    suffix = timestamp(now)
    model_name = config.model_name or f"{config.endpoint_name}-{suffix}"
    config_name = config.endpoint_config_name or f"{config.endpoint_name}-{suffix}"
    check_name("model name", model_name)
    check_name("endpoint config name", config_name)
    tagged = tag_list(config.tags)

    calls = plan_model(
        name=model_name,
        image_uri=config.image_uri,
        role_arn=config.role_arn,
        model_data=config.model_data,
        bucket=config.bucket,
        key_prefix=f"{config.prefix.strip('/')}/{config.endpoint_name}/{suffix}",
        environment=with_mode(config.environment, config.mode),
        tags=config.tags,
    )
    endpoint_config: dict[str, Any] = {
        "EndpointConfigName": config_name,
        "ProductionVariants": [_variant(config, model_name)],
    }
    if config.mode == "async":
        endpoint_config["AsyncInferenceConfig"] = _async_inference_config(config)
    calls.append(ApiCall("sagemaker", "create_endpoint_config", {**endpoint_config, **tagged}))
    endpoint = {"EndpointName": config.endpoint_name, "EndpointConfigName": config_name}
    if config.update:
        calls.append(ApiCall("sagemaker", "update_endpoint", endpoint))
    else:
        calls.append(ApiCall("sagemaker", "create_endpoint", {**endpoint, **tagged}))

    # Application Auto Scaling only accepts a variant whose endpoint is InService.
    autoscaling = config.autoscaling and config.mode != "serverless"  # serverless scales by itself
    if config.wait or autoscaling:
        calls.append(
            ApiCall("sagemaker", "endpoint_in_service", {"EndpointName": config.endpoint_name}, kind="wait")
        )
    if autoscaling:
        calls += _autoscaling(config)
    return calls


def _variant(config: DeployConfig, model_name: str) -> dict[str, Any]:
    if config.mode == "serverless":
        serverless: dict[str, Any] = {
            "MemorySizeInMB": config.serverless_memory_mb,
            "MaxConcurrency": config.serverless_max_concurrency,
        }
        if config.serverless_provisioned_concurrency is not None:
            serverless["ProvisionedConcurrency"] = config.serverless_provisioned_concurrency
        return {"VariantName": config.variant_name, "ModelName": model_name, "ServerlessConfig": serverless}
    variant: dict[str, Any] = {
        "VariantName": config.variant_name,
        "ModelName": model_name,
        "InstanceType": config.instance_type,
        "InitialInstanceCount": config.initial_instance_count,
        "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": config.startup_health_check_timeout,
        "ModelDataDownloadTimeoutInSeconds": config.model_data_download_timeout,
    }
    ami = config.inference_ami_version
    if ami is None and is_gpu_instance(config.instance_type):
        ami = GPU_INFERENCE_AMI
    if ami:
        variant["InferenceAmiVersion"] = ami
    return variant


def _async_inference_config(config: DeployConfig) -> dict[str, Any]:
    output: dict[str, Any] = {"S3OutputPath": config.async_output}
    if config.async_failure_output:
        output["S3FailurePath"] = config.async_failure_output
    topics = {"SuccessTopic": config.success_topic, "ErrorTopic": config.error_topic}
    if any(topics.values()):
        output["NotificationConfig"] = {key: arn for key, arn in topics.items() if arn}
    async_config: dict[str, Any] = {"OutputConfig": output}
    if config.max_concurrent_invocations is not None:
        async_config["ClientConfig"] = {
            "MaxConcurrentInvocationsPerInstance": config.max_concurrent_invocations
        }
    return async_config


def _autoscaling(config: DeployConfig) -> list[ApiCall]:
    """Real-time: target tracking on invocations per instance. Asynchronous: on the queue backlog per
    instance, and, when it may scale to zero, a step policy that an alarm on HasBacklogWithoutCapacity
    triggers (target tracking cannot leave zero: with no instances there is no backlog per instance)."""
    name = config.endpoint_name
    resource = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{name}/variant/{config.variant_name}",
        "ScalableDimension": SCALABLE_DIMENSION,
    }
    calls = [
        ApiCall(
            "application-autoscaling",
            "register_scalable_target",
            {**resource, "MinCapacity": config.lowest_capacity, "MaxCapacity": config.max_capacity},
        )
    ]
    cooldowns = {"ScaleInCooldown": config.scale_in_cooldown, "ScaleOutCooldown": config.scale_out_cooldown}
    if config.mode == "realtime":
        tracking: dict[str, Any] = {
            "TargetValue": config.target_invocations_per_instance,
            "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_PER_INSTANCE},
            **cooldowns,
        }
        policy_name = f"{name}-invocations-per-instance"
    else:
        tracking = {
            "TargetValue": config.target_backlog_per_instance,
            "CustomizedMetricSpecification": {
                "MetricName": BACKLOG_PER_INSTANCE,
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": name}],
                "Statistic": "Average",
            },
            **cooldowns,
        }
        policy_name = f"{name}-backlog-per-instance"
    calls.append(
        ApiCall(
            "application-autoscaling",
            "put_scaling_policy",
            {
                "PolicyName": policy_name,
                **resource,
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": tracking,
            },
        )
    )
    if config.mode == "async" and config.lowest_capacity == 0:
        calls.append(
            ApiCall(
                "application-autoscaling",
                "put_scaling_policy",
                {
                    "PolicyName": f"{name}-scale-out-from-zero",
                    **resource,
                    "PolicyType": "StepScaling",
                    "StepScalingPolicyConfiguration": {
                        "AdjustmentType": "ChangeInCapacity",
                        "MetricAggregationType": "Average",
                        "Cooldown": config.scale_out_cooldown,
                        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
                    },
                },
                ref="scale-out-from-zero",
            )
        )
        calls.append(
            ApiCall(
                "cloudwatch",
                "put_metric_alarm",
                {
                    "AlarmName": f"{name}-backlog-without-capacity",
                    "AlarmDescription": f"Requests wait at {name} with no instance: start one.",
                    "Namespace": "AWS/SageMaker",
                    "MetricName": BACKLOG_WITHOUT_CAPACITY,
                    "Dimensions": [{"Name": "EndpointName", "Value": name}],
                    "Statistic": "Average",
                    "Period": 60,
                    "EvaluationPeriods": 2,
                    "DatapointsToAlarm": 2,
                    "Threshold": 1.0,
                    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "TreatMissingData": "missing",
                    "AlarmActions": [FromResponse("scale-out-from-zero", "PolicyARN")],
                },
            )
        )
    return calls


def _check(config: DeployConfig) -> None:
    check_name("endpoint name", config.endpoint_name)
    check_name("variant name", config.variant_name)
    check_model_source(config.model_data, config.bucket, config.role_arn)
    if config.mode == "serverless":
        _check_serverless(config)
        return
    if config.initial_instance_count < 1:
        raise PlanError("the initial instance count must be at least 1")
    if config.mode == "async":
        _check_async(config)
    elif config.success_topic or config.error_topic or config.async_failure_output:
        raise PlanError("--success-topic, --error-topic and --async-failure-output need --async-output")
    if config.autoscaling:
        lowest = config.lowest_capacity
        floor = 0 if config.mode == "async" else 1
        if not floor <= lowest <= config.max_capacity:
            raise PlanError(
                f"autoscaling needs {floor} <= min capacity ({lowest}) <= max ({config.max_capacity})"
            )
        if not max(lowest, 1) <= config.initial_instance_count <= config.max_capacity:
            raise PlanError(
                f"the initial instance count ({config.initial_instance_count}) must lie within the "
                f"autoscaling range [{max(lowest, 1)}, {config.max_capacity}]"
            )
        if config.target_invocations_per_instance <= 0 or config.target_backlog_per_instance <= 0:
            raise PlanError("autoscaling targets must be positive")


def _check_async(config: DeployConfig) -> None:
    check_s3_url("--async-output", config.async_output)
    check_s3_url("--async-failure-output", config.async_failure_output)
    for option, arn in (("--success-topic", config.success_topic), ("--error-topic", config.error_topic)):
        if arn is not None and not re.fullmatch(r"arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]{1,256}", arn):
            raise PlanError(
                f"{option} {arn!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"
            )
    if config.max_concurrent_invocations is not None and config.max_concurrent_invocations < 1:
        raise PlanError("--max-concurrent-invocations must be at least 1")


def _check_serverless(config: DeployConfig) -> None:
    if config.serverless_memory_mb not in SERVERLESS_MEMORY_MB:
        sizes = ", ".join(str(size) for size in SERVERLESS_MEMORY_MB)
        raise PlanError(f"--serverless {config.serverless_memory_mb}: the memory must be one of {sizes} MB")
    if not 1 <= config.serverless_max_concurrency <= SERVERLESS_MAX_CONCURRENCY:
        raise PlanError(f"--max-concurrency must lie within [1, {SERVERLESS_MAX_CONCURRENCY}]")
    provisioned = config.serverless_provisioned_concurrency
    if provisioned is not None and not 1 <= provisioned <= config.serverless_max_concurrency:
        raise PlanError("--provisioned-concurrency must lie within [1, --max-concurrency]")
    tag = config.image_uri.rsplit("/", 1)[-1].partition(":")[2]
    if "gpu" in tag:
        raise PlanError(f"serverless endpoints have no GPU: deploy the cpu image, not {config.image_uri}")
