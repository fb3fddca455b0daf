"""The web page's files as HTTP serves them: from the package, local only, open without a key.

How the page behaves in a browser is tested in tests/web (real server, Chromium).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import page_url
from service.settings import Settings

STATIC = Path(__file__).resolve().parents[2] / "service" / "static"
ROOT = STATIC.parents[1]


def test_the_page_is_served_at_the_root(client: TestClient) -> None:
    for path in ("/", "/index.html"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.content == (STATIC / "index.html").read_bytes()
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-cache"


def test_every_asset_the_page_names_is_served_locally(client: TestClient) -> None:
    html = client.get("/").text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert assets, html
    for asset in assets:
        if asset == "/docs":
            continue
        assert asset.startswith("/static/"), f"{asset} is not one of the service's own files"
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in html and "https://" not in html
    script = client.get("/static/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "import " not in script.text, "the page is one module with no imports: nothing to fetch"


@pytest.mark.parametrize("path", ["/static/nothing.js", "/static/..%2Fcli.py", "/static/%2E%2E/app.py"])
def test_only_page_files_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)


@pytest.fixture(scope="module")
def keyed(repo: Path) -> Iterator[TestClient]:
    settings = Settings(models_dir=repo, warmup_batch_sizes=[1], api_keys="page-test-key-0123456789")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_page_needs_no_key_but_the_api_does(keyed: TestClient) -> None:
    for path in ("/", "/static/app.js", "/static/style.css"):
        assert keyed.get(path).status_code == 200, path
    refused = keyed.get("/models")
    assert refused.status_code == 401  # what makes the page ask for a key


def test_the_page_files_are_package_data() -> None:
    """An installed wheel carries service/static/: every file there matches a package-data glob."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    patterns = package_data.get("service", []) + package_data.get("*", [])
    files = [path.relative_to(ROOT / "service").as_posix() for path in STATIC.iterdir()]
    assert files
    for name in files:
        assert any(fnmatch(name, pattern) for pattern in patterns), f"{name} is not package data"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/"),
        ("0.0.0.0", "http://127.0.0.1:8000/"),
        ("::", "http://127.0.0.1:8000/"),
        ("::1", "http://[::1]:8000/"),
        ("gan.example", "http://gan.example:8000/"),
    ],
)
def test_the_address_gan_serve_prints(host: str, url: str) -> None:
    assert page_url(host, 8000) == url
