"""A SageMaker Batch Transform job over an S3 prefix of JSON Lines, as data (see deploy.plan).

Each input line is one /generate request (`{"model": "faces64", "n": 16, "seed": 7}`); SageMaker
splits the files by line, sends them to /invocations as application/jsonlines, and writes one output
line per input line, in order, to `<output>/<input file>.out`. The container runs with
GAN_SERVE_SAGEMAKER_MODE=batch and answers GET /execution-parameters, so SageMaker picks the
concurrency, batch strategy and payload size from the service unless the job sets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from deploy.plan import (
    ApiCall,
    PlanError,
    check_model_source,
    check_name,
    check_s3_url,
    is_gpu_instance,
    plan_model,
    tag_list,
    timestamp,
    with_mode,
)

JSON_LINES = "application/jsonlines"
#: SageMaker's limits for one transform request (MaxPayloadInMB) and one invocation's timeout.
MAX_PAYLOAD_MB = 100
MAX_INVOCATION_TIMEOUT = 3600
TIMEOUT_VARIABLE = "GAN_SERVE_INVOCATION_TIMEOUT_S"

BatchStrategy = Literal["MultiRecord", "SingleRecord"]


@dataclass(frozen=True)
class TransformConfig:
    """One Batch Transform job; unset limits are left to the container's /execution-parameters."""

    image_uri: str
    role_arn: str
    model_data: str  # a local model.tar.gz to upload, or an s3:// URL already holding one
    input_uri: str  # s3:// prefix of .jsonl files
    output_uri: str  # s3:// prefix for the .out files
    bucket: str | None = None
    prefix: str = "gan-serve"
    job_name: str | None = None  # default: gan-transform-<UTC timestamp>
    model_name: str | None = None  # default: the job name
    instance_type: str = "ml.c7i.2xlarge"
    instance_count: int = 1
    max_concurrent_transforms: int | None = None
    max_payload_mb: int | None = None
    batch_strategy: BatchStrategy | None = None
    invocation_timeout: int = 600
    invocation_retries: int = 1
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    wait: bool = False


def plan_transform(config: TransformConfig, now: datetime | None = None) -> list[ApiCall]:
    """Every call, in order: upload, model (batch mode), transform job, and the wait if asked for."""
    _check(config)
    suffix = timestamp(now)
    job_name = config.job_name or f"gan-transform-{suffix}"
    model_name = config.model_name or job_name
    check_name("transform job name", job_name)
    check_name("model name", model_name)

    calls = plan_model(
        name=model_name,
        image_uri=config.image_uri,
        role_arn=config.role_arn,
        model_data=config.model_data,
        bucket=config.bucket,
        key_prefix=f"{config.prefix.strip('/')}/{job_name}",
        # The container's own deadline for one request follows the job's (see service.settings).
        environment=with_mode(
            {TIMEOUT_VARIABLE: str(config.invocation_timeout), **config.environment}, "batch"
        ),
        tags=config.tags,
    )
    job: dict[str, Any] = {"TransformJobName": job_name, "ModelName": model_name}
    if config.max_concurrent_transforms is not None:
        job["MaxConcurrentTransforms"] = config.max_concurrent_transforms
    if config.max_payload_mb is not None:
        job["MaxPayloadInMB"] = config.max_payload_mb
    if config.batch_strategy is not None:
        job["BatchStrategy"] = config.batch_strategy
    job |= {
        "ModelClientConfig": {
            "InvocationsTimeoutInSeconds": config.invocation_timeout,
            "InvocationsMaxRetries": config.invocation_retries,
        },
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": config.input_uri}},
            "ContentType": JSON_LINES,
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": config.output_uri, "Accept": JSON_LINES, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": config.instance_type, "InstanceCount": config.instance_count},
        **tag_list(config.tags),
    }
    calls.append(ApiCall("sagemaker", "create_transform_job", job))
    if config.wait:
        calls.append(
            ApiCall(
                "sagemaker", "transform_job_completed_or_stopped", {"TransformJobName": job_name}, kind="wait"
            )
        )
    return calls


def _check(config: TransformConfig) -> None:
    check_model_source(config.model_data, config.bucket, config.role_arn)
    check_s3_url("--input", config.input_uri)
    check_s3_url("--output", config.output_uri)
    if config.instance_count < 1:
        raise PlanError("the instance count must be at least 1")
    tag = config.image_uri.rsplit("/", 1)[-1].partition(":")[2]
    if "gpu" in tag and not is_gpu_instance(config.instance_type):
        raise PlanError(
            f"{config.image_uri} needs a GPU and {config.instance_type} has none: "
            "pass a GPU --instance-type (ml.g*, ml.p*) or the cpu image"
        )
    if config.max_concurrent_transforms is not None and config.max_concurrent_transforms < 1:
        raise PlanError("--max-concurrent-transforms must be at least 1")
    if config.max_payload_mb is not None and not 0 <= config.max_payload_mb <= MAX_PAYLOAD_MB:
        raise PlanError(f"--max-payload-mb must lie within [0, {MAX_PAYLOAD_MB}] (SageMaker's limit)")
    if not 1 <= config.invocation_timeout <= MAX_INVOCATION_TIMEOUT:
        raise PlanError(f"--invocation-timeout must lie within [1, {MAX_INVOCATION_TIMEOUT}] seconds")
    if not 0 <= config.invocation_retries <= 3:
        raise PlanError("--invocation-retries must lie within [0, 3]")
