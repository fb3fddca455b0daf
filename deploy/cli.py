"""`gan-deploy` (python -m deploy): SageMaker endpoints and Batch Transform jobs for gan-serve.

gan-deploy --endpoint-name NAME ...                       real-time endpoint (default)
gan-deploy --endpoint-name NAME --async-output s3://...   asynchronous endpoint
gan-deploy --endpoint-name NAME --serverless 4096 ...     serverless endpoint
gan-deploy transform --input s3://... --output s3://...   Batch Transform job over JSON Lines
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from deploy.execute import ClientFactory, DeployError, execute
from deploy.plan import SERVERLESS_MEMORY_MB, ApiCall, DeployConfig, PlanError, plan_deployment
from deploy.transform import TransformConfig, plan_transform
from service import __version__


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What the SageMaker model is made of: image, role, model.tar.gz and its S3 place, settings."""
    parser.add_argument("--image", required=True, help="ECR image URI, e.g. <account>.dkr.ecr.<region>…:gpu")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument(
        "--model-data", required=True, help="local model.tar.gz to upload, or an s3:// URL holding one"
    )
    parser.add_argument("--bucket", help="S3 bucket to upload a local model.tar.gz to")
    parser.add_argument("--prefix", default="gan-serve", help="S3 key prefix (default: %(default)s)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="container environment, e.g. GAN_SERVE_TILE_SIZE=512 (repeatable)",
    )
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="resource tag")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print every API call as one JSON object per line; make none"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-deploy",
        description="Deploy a gan-serve image and a model.tar.gz (from `gan-export package`) as a "
        "SageMaker endpoint: real-time (default) with target-tracking autoscaling on invocations per "
        "instance, asynchronous (--async-output) scaling on its queue down to zero, or serverless "
        "(--serverless). `gan-deploy transform --help`: a Batch Transform job instead.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--endpoint-name", required=True, help="SageMaker endpoint name")
    _add_model_arguments(parser)
    parser.add_argument("--instance-type", default="ml.g5.xlarge", help="default: %(default)s")
    parser.add_argument("--initial-instance-count", type=int, default=1, help="default: %(default)s")
    parser.add_argument(
        "--inference-ami-version",
        help="SageMaker hosting AMI (default on ml.g*/ml.p*: the one with NVIDIA driver 580, for CUDA 13)",
    )
    parser.add_argument("--variant-name", default="AllTraffic", help="default: %(default)s")
    parser.add_argument("--model-name", help="default: <endpoint-name>-<UTC timestamp>")
    parser.add_argument("--endpoint-config-name", help="default: <endpoint-name>-<UTC timestamp>")
    parser.add_argument(
        "--update", action="store_true", help="point an existing endpoint at the new model (update_endpoint)"
    )
    parser.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")

    kind = parser.add_argument_group("endpoint kind (default: real-time)").add_mutually_exclusive_group()
    kind.add_argument(
        "--async-output",
        metavar="S3_URL",
        help="asynchronous inference: requests come from S3 (invoke_endpoint_async), responses go under "
        "this s3:// prefix; up to 1 GB and one hour per request",
    )
    kind.add_argument(
        "--serverless",
        type=int,
        metavar="MEMORY_MB",
        help=f"serverless inference with this much memory ({', '.join(map(str, SERVERLESS_MEMORY_MB))}); "
        "CPU only (deploy the cpu image), 4 MB payloads",
    )
    asynchronous = parser.add_argument_group("asynchronous endpoints")
    asynchronous.add_argument("--async-failure-output", metavar="S3_URL", help="s3:// prefix for failures")
    asynchronous.add_argument("--success-topic", metavar="SNS_ARN", help="SNS topic told of each success")
    asynchronous.add_argument("--error-topic", metavar="SNS_ARN", help="SNS topic told of each failure")
    asynchronous.add_argument(
        "--max-concurrent-invocations",
        type=int,
        metavar="N",
        help="requests one instance works on at once (default: SageMaker's)",
    )
    asynchronous.add_argument(
        "--target-backlog",
        type=float,
        default=5.0,
        help="autoscaling target: queued requests per instance (default: %(default)s)",
    )
    serverless = parser.add_argument_group("serverless endpoints")
    serverless.add_argument(
        "--max-concurrency", type=int, default=5, help="concurrent invocations (default: %(default)s)"
    )
    serverless.add_argument("--provisioned-concurrency", type=int, help="warm instances kept ready")

    scaling = parser.add_argument_group("autoscaling (real-time and asynchronous endpoints)")
    scaling.add_argument(
        "--no-autoscaling", dest="autoscaling", action="store_false", help="skip the autoscaling policy"
    )
    scaling.add_argument(
        "--min-capacity", type=int, help="default: 1 (real-time), 0 (asynchronous: scale to zero)"
    )
    scaling.add_argument("--max-capacity", type=int, default=4, help="default: %(default)s")
    scaling.add_argument(
        "--target-invocations",
        type=float,
        default=100.0,
        help="target SageMakerVariantInvocationsPerInstance per minute (default: %(default)s)",
    )
    scaling.add_argument("--scale-in-cooldown", type=int, default=300, help="seconds (default: %(default)s)")
    scaling.add_argument("--scale-out-cooldown", type=int, default=60, help="seconds (default: %(default)s)")
    _add_run_arguments(parser)
    return parser


def build_transform_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-deploy transform",
        description="Run a SageMaker Batch Transform job: every line of the JSON Lines files under "
        "--input is one /generate request; each output file under --output holds one line per input "
        "line, in order. Creates the model (with GAN_SERVE_SAGEMAKER_MODE=batch) first.",
    )
    parser.add_argument(
        "--input", required=True, metavar="S3_URL", help="s3:// prefix of .jsonl request files"
    )
    parser.add_argument("--output", required=True, metavar="S3_URL", help="s3:// prefix for the results")
    _add_model_arguments(parser)
    parser.add_argument("--job-name", help="default: gan-transform-<UTC timestamp>")
    parser.add_argument("--model-name", help="default: the job name")
    parser.add_argument("--instance-type", default="ml.c7i.2xlarge", help="default: %(default)s")
    parser.add_argument("--instance-count", type=int, default=1, help="default: %(default)s")
    parser.add_argument(
        "--max-concurrent-transforms", type=int, help="default: the container's /execution-parameters"
    )
    parser.add_argument("--max-payload-mb", type=int, help="default: the container's /execution-parameters")
    parser.add_argument(
        "--batch-strategy",
        choices=["MultiRecord", "SingleRecord"],
        help="lines per request: as many as fit, or one (default: the container's /execution-parameters)",
    )
    parser.add_argument(
        "--invocation-timeout", type=int, default=600, help="seconds per request (default: %(default)s)"
    )
    parser.add_argument("--invocation-retries", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--wait", action="store_true", help="wait until the job has completed")
    _add_run_arguments(parser)
    return parser


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise PlanError(f"{option} {value!r}: expected KEY=VALUE")
        pairs[key] = item
    return pairs


def config_from_args(args: argparse.Namespace) -> DeployConfig:
    """The deployment the command line describes."""
    return DeployConfig(
        endpoint_name=args.endpoint_name,
        image_uri=args.image,
        role_arn=args.role,
        model_data=args.model_data,
        bucket=args.bucket,
        prefix=args.prefix,
        instance_type=args.instance_type,
        initial_instance_count=args.initial_instance_count,
        variant_name=args.variant_name,
        inference_ami_version=args.inference_ami_version,
        environment=_pairs(args.env, "--env"),
        tags=_pairs(args.tag, "--tag"),
        model_name=args.model_name,
        endpoint_config_name=args.endpoint_config_name,
        update=args.update,
        wait=args.wait,
        autoscaling=args.autoscaling,
        min_capacity=args.min_capacity,
        max_capacity=args.max_capacity,
        target_invocations_per_instance=args.target_invocations,
        scale_in_cooldown=args.scale_in_cooldown,
        scale_out_cooldown=args.scale_out_cooldown,
        async_output=args.async_output,
        async_failure_output=args.async_failure_output,
        success_topic=args.success_topic,
        error_topic=args.error_topic,
        max_concurrent_invocations=args.max_concurrent_invocations,
        target_backlog_per_instance=args.target_backlog,
        serverless_memory_mb=args.serverless,
        serverless_max_concurrency=args.max_concurrency,
        serverless_provisioned_concurrency=args.provisioned_concurrency,
    )


def transform_config_from_args(args: argparse.Namespace) -> TransformConfig:
    """The Batch Transform job the command line describes."""
    return TransformConfig(
        image_uri=args.image,
        role_arn=args.role,
        model_data=args.model_data,
        input_uri=args.input,
        output_uri=args.output,
        bucket=args.bucket,
        prefix=args.prefix,
        job_name=args.job_name,
        model_name=args.model_name,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        max_concurrent_transforms=args.max_concurrent_transforms,
        max_payload_mb=args.max_payload_mb,
        batch_strategy=args.batch_strategy,
        invocation_timeout=args.invocation_timeout,
        invocation_retries=args.invocation_retries,
        environment=_pairs(args.env, "--env"),
        tags=_pairs(args.tag, "--tag"),
        wait=args.wait,
    )


def boto3_clients(region: str | None) -> ClientFactory:
    """Clients from one boto3 session; imported here so that --dry-run needs no AWS configuration."""
    import boto3

    session = boto3.session.Session(region_name=region)
    return lambda service: session.client(service)


def main(
    argv: Sequence[str] | None = None,
    client_for: ClientFactory | None = None,
    now: datetime | None = None,
) -> int:
    """Run the command line; `client_for` and `now` let tests stub AWS and fix generated names."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["transform"]:
        args = build_transform_parser().parse_args(arguments[1:])
        return _run(
            args, lambda: plan_transform(transform_config_from_args(args), now=now), client_for, _report_job
        )
    args = build_parser().parse_args(arguments)
    return _run(args, lambda: plan_deployment(config_from_args(args), now=now), client_for, _report_endpoint)


def _run(
    args: argparse.Namespace,
    plan: Callable[[], list[ApiCall]],
    client_for: ClientFactory | None,
    report: Callable[[ApiCall, Any], str | None],
) -> int:
    """Plan, then print the plan (--dry-run) or make the calls; exit status 2 for bad settings, 1 for AWS."""
    try:
        calls = plan()
    except PlanError as exc:
        print(f"gan-deploy: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for call in calls:
            print(json.dumps(call.to_json_dict(), sort_keys=False))
        return 0
    done = None
    try:
        for call, response in execute(
            calls, client_for or boto3_clients(args.region), log=lambda m: print(m, file=sys.stderr)
        ):
            done = report(call, response) or done
    except DeployError as exc:
        print(f"gan-deploy: error: {exc}", file=sys.stderr)
        return 1
    if done:
        print(done)
    return 0


def _report_endpoint(call: ApiCall, response: Any) -> str | None:
    """Prints the endpoint's ARN; the line to end with."""
    if call.operation not in {"create_endpoint", "update_endpoint"}:
        return None
    name = call.params["EndpointName"]
    print(f"endpoint {name}: {response.get('EndpointArn', 'updating')}")
    return f"deployed: endpoint {name}"


def _report_job(call: ApiCall, response: Any) -> str | None:
    """Prints the job's ARN; the line to end with."""
    name = call.params.get("TransformJobName")
    if call.operation == "create_transform_job":
        print(f"transform job {name}: {response.get('TransformJobArn')}")
        output = call.params["TransformOutput"]["S3OutputPath"]
        return f"started: transform job {name}, writing to {output}"
    if call.kind == "wait":
        return f"completed: transform job {name}"
    return None
