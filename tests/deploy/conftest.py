"""Real boto3 clients with fake credentials, fronted by botocore's Stubber: nothing reaches AWS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No real credentials, config or instance metadata can be found, whatever the machine has."""
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.write_text("")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


class StubbedAws:
    """One stubbed client per service, handed out by `client_for` as deploy.execute asks for them."""

    def __init__(self) -> None:
        session = boto3.session.Session()
        self.clients: dict[str, Any] = {
            name: session.client(name)
            for name in ("s3", "sagemaker", "application-autoscaling", "cloudwatch")
        }
        self.stubbers = {name: Stubber(client) for name, client in self.clients.items()}
        self.asked: list[str] = []

    def client_for(self, service: str) -> Any:
        self.asked.append(service)
        return self.clients[service]

    def assert_all_called(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


@pytest.fixture
def aws() -> Iterator[StubbedAws]:
    stubbed = StubbedAws()
    for stubber in stubbed.stubbers.values():
        stubber.activate()
    yield stubbed
    for stubber in stubbed.stubbers.values():
        stubber.deactivate()
