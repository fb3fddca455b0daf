"""Run a deployment plan with boto3 clients, one call at a time, stopping at the first error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from deploy.plan import ApiCall, FromResponse

#: Returns the boto3 client for a service name ("s3", "sagemaker", "application-autoscaling", "cloudwatch").
ClientFactory = Callable[[str], Any]

#: Endpoints take minutes to come up: poll every 30 s for up to an hour (SageMaker's own limit).
WAITER_CONFIG = {"Delay": 30, "MaxAttempts": 120}


class DeployError(RuntimeError):
    """An AWS call failed; the message names the call and AWS's reason, without a traceback."""


def execute(
    calls: list[ApiCall], client_for: ClientFactory, log: Callable[[str], None] = print
) -> Iterator[tuple[ApiCall, Any]]:
    """Make each call in order and yield it with AWS's response; raises DeployError on the first failure."""
    clients: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    for call in calls:
        if call.service not in clients:
            clients[call.service] = client_for(call.service)
        client = clients[call.service]
        log(f"{call.service} {call.operation} ...")
        try:
            response = _run(client, call, resolve(call.params, answers))
            if call.ref:
                answers[call.ref] = response
            yield call, response
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise DeployError(
                f"{call.service} {call.operation} failed: {error.get('Code', 'Error')}: "
                f"{error.get('Message', exc)}"
            ) from None
        except WaiterError as exc:
            failure = (exc.last_response or {}).get("FailureReason")
            raise DeployError(
                f"{call.operation} for {call.params}: {exc.kwargs.get('reason', exc)}"
                + (f"; SageMaker says: {failure}" if failure else "")
            ) from None
        except BotoCoreError as exc:
            raise DeployError(f"{call.service} {call.operation} failed: {exc}") from None


def resolve(value: Any, answers: dict[str, Any]) -> Any:
    """`value` with each FromResponse replaced by what the earlier call answered."""
    if isinstance(value, FromResponse):
        return answers[value.call][value.key]
    if isinstance(value, dict):
        return {key: resolve(item, answers) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, answers) for item in value]
    return value


def _run(client: Any, call: ApiCall, params: dict[str, Any]) -> Any:
    if call.kind == "wait":
        return client.get_waiter(call.operation).wait(**params, WaiterConfig=WAITER_CONFIG)
    if call.operation == "put_object":
        # The plan holds the file's path (so that --dry-run can print it); the call needs its bytes.
        with open(params["Body"], "rb") as body:
            return client.put_object(**{**params, "Body": body})
    return getattr(client, call.operation)(**params)
