"""The AWS API calls a deployment makes, as data: printed by --dry-run, run by deploy.execute."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

#: SageMaker resource names (model, endpoint config, endpoint, variant).
SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
NAME_RULE = "letters, digits and '-', at most 63, starting and ending with a letter or digit"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
#: onnxruntime-gpu 1.31 needs CUDA 13, so an NVIDIA driver >= 580: the SageMaker hosting AMI that has it.
#: Without it SageMaker picks an older AMI (driver 535/550) and the CUDA provider cannot start.
GPU_INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"


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
    min_capacity: int = 1
    max_capacity: int = 4
    target_invocations_per_instance: float = 100.0
    scale_in_cooldown: int = 300
    scale_out_cooldown: int = 60
    startup_health_check_timeout: int = 600
    model_data_download_timeout: int = 600
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiCall:
    """One boto3 client method call (`kind="call"`) or waiter (`kind="wait"`) with its parameters."""

    service: Literal["s3", "sagemaker", "application-autoscaling"]
    operation: str
    params: dict[str, Any]
    kind: Literal["call", "wait"] = "call"

    def to_json_dict(self) -> dict[str, Any]:
        key = "waiter" if self.kind == "wait" else "operation"
        return {"service": self.service, key: self.operation, "params": self.params}


def timestamp(now: datetime | None = None) -> str:
    """A name suffix that sorts by time and is valid in SageMaker names."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def plan_deployment(config: DeployConfig, now: datetime | None = None) -> list[ApiCall]:
    """Every call, in order: upload, model, endpoint config, endpoint, wait, autoscaling."""
    _check(config)
    suffix = timestamp(now)
    model_name = config.model_name or f"{config.endpoint_name}-{suffix}"
    config_name = config.endpoint_config_name or f"{config.endpoint_name}-{suffix}"
    for label, name in (("model name", model_name), ("endpoint config name", config_name)):
        if not SAGEMAKER_NAME.fullmatch(name):
            raise PlanError(f"{label} {name!r} is not a valid SageMaker name ({NAME_RULE})")
    tags = [{"Key": key, "Value": value} for key, value in sorted(config.tags.items())]
    tagged: dict[str, Any] = {"Tags": tags} if tags else {}

    calls: list[ApiCall] = []
    if config.model_data.startswith("s3://"):
        model_data_url = config.model_data
    else:
        key = f"{config.prefix.strip('/')}/{config.endpoint_name}/{suffix}/model.tar.gz".lstrip("/")
        model_data_url = f"s3://{config.bucket}/{key}"
        calls.append(
            ApiCall("s3", "put_object", {"Bucket": config.bucket, "Key": key, "Body": config.model_data})
        )

    container: dict[str, Any] = {"Image": config.image_uri, "ModelDataUrl": model_data_url}
    if config.environment:
        container["Environment"] = dict(sorted(config.environment.items()))
    calls.append(
        ApiCall(
            "sagemaker",
            "create_model",
            {
                "ModelName": model_name,
                "ExecutionRoleArn": config.role_arn,
                "PrimaryContainer": container,
                **tagged,
            },
        )
    )
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
    calls.append(
        ApiCall(
            "sagemaker",
            "create_endpoint_config",
            {"EndpointConfigName": config_name, "ProductionVariants": [variant], **tagged},
        )
    )
    endpoint = {"EndpointName": config.endpoint_name, "EndpointConfigName": config_name}
    if config.update:
        calls.append(ApiCall("sagemaker", "update_endpoint", endpoint))
    else:
        calls.append(ApiCall("sagemaker", "create_endpoint", {**endpoint, **tagged}))

    # Application Auto Scaling only accepts a variant whose endpoint is InService.
    if config.wait or config.autoscaling:
        calls.append(
            ApiCall("sagemaker", "endpoint_in_service", {"EndpointName": config.endpoint_name}, kind="wait")
        )
    if config.autoscaling:
        resource = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"endpoint/{config.endpoint_name}/variant/{config.variant_name}",
            "ScalableDimension": SCALABLE_DIMENSION,
        }
        calls.append(
            ApiCall(
                "application-autoscaling",
                "register_scalable_target",
                {**resource, "MinCapacity": config.min_capacity, "MaxCapacity": config.max_capacity},
            )
        )
        calls.append(
            ApiCall(
                "application-autoscaling",
                "put_scaling_policy",
                {
                    "PolicyName": f"{config.endpoint_name}-invocations-per-instance",
                    **resource,
                    "PolicyType": "TargetTrackingScaling",
                    "TargetTrackingScalingPolicyConfiguration": {
                        "TargetValue": config.target_invocations_per_instance,
                        "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_PER_INSTANCE},
                        "ScaleInCooldown": config.scale_in_cooldown,
                        "ScaleOutCooldown": config.scale_out_cooldown,
                    },
                },
            )
        )
    return calls


def _check(config: DeployConfig) -> None:
    if not SAGEMAKER_NAME.fullmatch(config.endpoint_name):
        raise PlanError(f"endpoint name {config.endpoint_name!r} is not a valid SageMaker name ({NAME_RULE})")
    if not SAGEMAKER_NAME.fullmatch(config.variant_name):
        raise PlanError(f"variant name {config.variant_name!r} is not a valid SageMaker name ({NAME_RULE})")
    if not config.model_data.startswith("s3://"):
        if not config.bucket:
            raise PlanError("--bucket is needed to upload a local model.tar.gz (or pass an s3:// URL)")
        if not Path(config.model_data).is_file():
            raise PlanError(f"{config.model_data}: no such file (make one with `gan-export package`)")
    if not config.role_arn.startswith("arn:"):
        raise PlanError(
            f"execution role {config.role_arn!r} is not an ARN (arn:aws:iam::<account>:role/<name>)"
        )
    if config.initial_instance_count < 1:
        raise PlanError("the initial instance count must be at least 1")
    if config.autoscaling:
        if not 1 <= config.min_capacity <= config.max_capacity:
            raise PlanError(
                f"autoscaling needs 1 <= min capacity ({config.min_capacity}) <= max ({config.max_capacity})"
            )
        if not config.min_capacity <= config.initial_instance_count <= config.max_capacity:
            raise PlanError(
                f"the initial instance count ({config.initial_instance_count}) must lie within the "
                f"autoscaling range [{config.min_capacity}, {config.max_capacity}]"
            )
        if config.target_invocations_per_instance <= 0:
            raise PlanError("the target invocations per instance must be positive")
