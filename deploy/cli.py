"""`python -m deploy` (gan-deploy): upload model.tar.gz, create model, config, endpoint, autoscaling."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime

from deploy.execute import ClientFactory, DeployError, execute
from deploy.plan import DeployConfig, PlanError, plan_deployment
from service import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-deploy",
        description="Deploy a gan-serve image and a model.tar.gz (from `gan-export package`) as a "
        "SageMaker real-time endpoint with target-tracking autoscaling on invocations per instance.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--endpoint-name", required=True, help="SageMaker endpoint name")
    parser.add_argument("--image", required=True, help="ECR image URI, e.g. <account>.dkr.ecr.<region>…:gpu")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument(
        "--model-data", required=True, help="local model.tar.gz to upload, or an s3:// URL holding one"
    )
    parser.add_argument("--bucket", help="S3 bucket to upload a local model.tar.gz to")
    parser.add_argument("--prefix", default="gan-serve", help="S3 key prefix (default: %(default)s)")
    parser.add_argument("--instance-type", default="ml.g5.xlarge", help="default: %(default)s")
    parser.add_argument("--initial-instance-count", type=int, default=1, help="default: %(default)s")
    parser.add_argument(
        "--inference-ami-version",
        help="SageMaker hosting AMI (default on ml.g*/ml.p*: the one with NVIDIA driver 580, for CUDA 13)",
    )
    parser.add_argument("--variant-name", default="AllTraffic", help="default: %(default)s")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="container environment, e.g. GAN_SERVE_TILE_SIZE=512 (repeatable)",
    )
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="resource tag")
    parser.add_argument("--model-name", help="default: <endpoint-name>-<UTC timestamp>")
    parser.add_argument("--endpoint-config-name", help="default: <endpoint-name>-<UTC timestamp>")
    parser.add_argument(
        "--update", action="store_true", help="point an existing endpoint at the new model (update_endpoint)"
    )
    parser.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")
    parser.add_argument(
        "--no-autoscaling", dest="autoscaling", action="store_false", help="skip the autoscaling policy"
    )
    parser.add_argument("--min-capacity", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--max-capacity", type=int, default=4, help="default: %(default)s")
    parser.add_argument(
        "--target-invocations",
        type=float,
        default=100.0,
        help="target SageMakerVariantInvocationsPerInstance per minute (default: %(default)s)",
    )
    parser.add_argument("--scale-in-cooldown", type=int, default=300, help="seconds (default: %(default)s)")
    parser.add_argument("--scale-out-cooldown", type=int, default=60, help="seconds (default: %(default)s)")
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print every API call as one JSON object per line; make none"
    )
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
    args = build_parser().parse_args(argv)
    try:
        calls = plan_deployment(config_from_args(args), now=now)
    except PlanError as exc:
        print(f"gan-deploy: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for call in calls:
            print(json.dumps(call.to_json_dict(), sort_keys=False))
        return 0
    try:
        for call, response in execute(
            calls, client_for or boto3_clients(args.region), log=lambda m: print(m, file=sys.stderr)
        ):
            if call.operation == "create_endpoint" or call.operation == "update_endpoint":
                print(f"endpoint {args.endpoint_name}: {response.get('EndpointArn', 'updating')}")
    except DeployError as exc:
        print(f"gan-deploy: error: {exc}", file=sys.stderr)
        return 1
    print(f"deployed: endpoint {args.endpoint_name}")
    return 0
