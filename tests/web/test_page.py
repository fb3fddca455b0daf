"""The page at `/`, used as a person would in Chromium, against the real service.

Each test checks what the person sees or downloads against what the public API returns for the
same request: the page must add nothing of its own.
"""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.web.conftest import API_KEY, CLASS_NAMES, CONDITIONAL, MAX_N, Server

expect = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra").expect

# Every browser test shares one xdist worker: one Chromium, one pair of servers.
pytestmark = pytest.mark.xdist_group("web")


def open_page(page: Any, server: Server, tab: str = "generate") -> None:
    page.goto(f"{server.url}#{tab}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def api(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    """The same request straight to the API, to compare the page with."""
    response = httpx.post(server.url + path, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response


def data_url_bytes(url: str) -> bytes:
    header, _, data = url.partition(",")
    assert header.endswith(";base64")
    return base64.b64decode(data)


def generate(page: Any, model: str, n: int, seed: str | None = None) -> None:
    page.select_option("#gen-model", model)
    page.fill("#gen-n", str(n))
    if seed is not None:
        page.fill("#gen-seed", seed)
    page.click("#gen-submit")


def test_models_are_listed_with_kind_size_and_demo_weights(page: Any, server: Server) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, server)
    options = page.locator("#gen-model option")
    expect(options).to_contain_text(
        [
            f"{CONDITIONAL} — 8×8 grey, 4 classes",
            "flat-gen — 10×12 RGB",
            f"{GRAY_GENERATOR} — 28×28 grey (demo weights)",
            f"{RGB_GENERATOR} — 16×16 RGB",
        ]
    )
    page.select_option("#gen-model", GRAY_GENERATOR)
    expect(page.locator("#gen-model-info .badge")).to_have_text("demo weights")
    expect(page.locator("#gen-model-info")).to_contain_text(
        "generator · DCGAN generator, MNIST 28×28 grayscale"
    )
    page.click("#tab-upscale")
    expect(page.locator("#up-model option")).to_have_text([f"{UPSCALER} — ×4"])
    expect(page.locator("#up-model-info")).to_contain_text("upscaler · ")
    # Every file the page loaded came from the service itself.
    assert requested and all(url.startswith(server.url) for url in requested), requested


def test_sixteen_images_and_a_click_downloads_one(page: Any, server: Server) -> None:
    open_page(page, server)
    generate(page, RGB_GENERATOR, 16, seed="424242")
    images = page.locator("#gen-grid img")
    expect(images).to_have_count(16)
    with page.expect_download() as download_info:
        images.nth(5).click()
    download = download_info.value
    assert download.suggested_filename == f"{RGB_GENERATOR}-seed424242-5.png"
    expect(page.locator("#gen-picked")).to_contain_text("Seed 424242, image 5 of 16")
    zipped = api(server, "generate", json={"model": RGB_GENERATOR, "n": 16, "seed": 424242}).content
    expected = zipfile.ZipFile(io.BytesIO(zipped)).read("0005.png")
    assert Path(download.path()).read_bytes() == expected


def test_reroll_changes_the_seed_and_a_fixed_seed_repeats_the_image(page: Any, server: Server) -> None:
    open_page(page, server)
    first = page.locator("#gen-grid img").first
    generate(page, RGB_GENERATOR, 1, seed="1234")
    expect(page.locator("#gen-status")).to_contain_text("from seed 1234")
    image = first.get_attribute("src")
    page.click("#gen-submit")
    expect(page.locator("#gen-status")).to_contain_text("from seed 1234")
    assert first.get_attribute("src") == image
    assert (
        data_url_bytes(image) == api(server, "generate", json={"model": RGB_GENERATOR, "seed": 1234}).content
    )
    page.click("#gen-reroll")
    expect(page.locator("#gen-seed")).not_to_have_value("1234")
    seed = page.input_value("#gen-seed")
    expect(page.locator("#gen-status")).to_contain_text(f"from seed {seed}")
    assert first.get_attribute("src") != image


def test_class_picker_and_truncation(page: Any, server: Server) -> None:
    open_page(page, server)
    page.select_option("#gen-model", CONDITIONAL)
    expect(page.locator("#gen-class option")).to_have_text(
        ["spread over the classes", *[f"{i} — {name}" for i, name in enumerate(CLASS_NAMES)]]
    )
    page.select_option("#gen-class", "2")
    page.fill("#gen-truncation", "0.5")
    expect(page.locator("#gen-truncation-value")).to_have_text("0.5")
    generate(page, CONDITIONAL, 3, seed="77")  # choosing the same model again keeps the class
    expect(page.locator("#gen-grid img")).to_have_count(3)
    body = {"model": CONDITIONAL, "n": 3, "seed": 77, "label": 2, "truncation": 0.5}
    zipped = zipfile.ZipFile(io.BytesIO(api(server, "generate", json=body).content))
    assert data_url_bytes(page.locator("#gen-grid img").nth(2).get_attribute("src")) == zipped.read(
        "0002.png"
    )
    assert page.locator("#gen-grid button").first.get_attribute("title") == "seed 77 · image 0 · class 2"
    page.select_option("#gen-model", RGB_GENERATOR)
    expect(page.locator("#gen-class")).to_be_hidden()


def test_the_interpolation_animation_has_the_asked_number_of_frames(page: Any, server: Server) -> None:
    open_page(page, server, "explore")
    page.select_option("#explore-model", RGB_GENERATOR)
    page.fill("#explore-from", "3")
    page.fill("#explore-to", "9")
    page.fill("#explore-steps", "12")
    page.fill("#explore-frame-ms", "80")
    page.click("#explore-submit")
    expect(page.locator("#explore-status")).to_contain_text("12 frames from seed 3 to seed 9")
    assert page.locator("#explore-strip").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [
        12 * 16,
        16,
    ]
    with page.expect_download() as download_info:
        page.click("#explore-download")
    animation = Path(download_info.value.path()).read_bytes()
    image = Image.open(io.BytesIO(animation))
    assert image.format == "WEBP" and getattr(image, "n_frames", 1) == 12
    body = {
        "model": RGB_GENERATOR,
        "interpolate": {"from": 3, "to": 9, "steps": 12, "method": "slerp"},
        "layout": "animation",
        "format": "webp",
        "frame_ms": 80,
    }
    assert animation == api(server, "generate", json=body).content


def _png(path: Path, width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def test_upload_shows_the_output_4x_and_downloads_it(page: Any, server: Server, tmp_path: Path) -> None:
    source = _png(tmp_path / "small.png", 20, 12)
    open_page(page, server, "upscale")
    page.set_input_files("#up-file", str(tmp_path / "small.png"))
    expect(page.locator("#up-drop-text")).to_contain_text("small.png")
    page.select_option("#up-tile", "0")
    held: list[Any] = []
    page.route(
        "**/upscale?*", lambda route: held.append(route)
    )  # hold the request to see the progress while it runs
    page.click("#up-submit")
    expect(page.locator("#up-progress-box")).to_be_visible()
    expect(page.locator("#up-status")).to_contain_text("Uploading")
    held[0].continue_()
    expect(page.locator("#up-result")).to_be_visible()
    expect(page.locator("#up-progress-box")).to_be_hidden()
    size = page.locator("#up-after").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [80, 48]
    # 1:1: the comparison is drawn at the output's own pixel size.
    assert page.locator("#up-compare").evaluate("box => [box.clientWidth, box.clientHeight]") == [80, 48]
    page.fill("#up-slider", "30")
    assert page.locator("#up-compare").evaluate("box => box.style.getPropertyValue('--split')") == "30%"
    with page.expect_download() as download_info:
        page.click("#up-download")
    download = download_info.value
    assert download.suggested_filename == "small-x4.png"
    downloaded = Path(download.path()).read_bytes()
    assert Image.open(io.BytesIO(downloaded)).size == (80, 48)
    expected = api(server, "upscale?tile=0", content=source, headers={"content-type": "image/png"}).content
    assert downloaded == expected


def test_an_image_can_be_dropped(page: Any, server: Server) -> None:
    open_page(page, server, "upscale")
    page.locator("#up-drop").evaluate(
        """drop => {
            const file = new File([new Uint8Array([137, 80, 78, 71])], "dropped.png", {type: "image/png"});
            const dataTransfer = new DataTransfer();
            dataTransfer.items.add(file);
            drop.dispatchEvent(new DragEvent("drop", {dataTransfer, bubbles: true, cancelable: true}));
        }"""
    )
    expect(page.locator("#up-drop-text")).to_contain_text("dropped.png")
    # Four bytes of PNG signature are no image: the API's own message is what the page shows.
    page.click("#up-submit")
    refusal = httpx.post(
        server.url + "upscale", content=bytes([137, 80, 78, 71]), headers={"content-type": "image/png"}
    ).json()["error"]
    expect(page.locator("#error-message")).to_have_text(refusal["message"])
    expect(page.locator("#error-code")).to_have_text(refusal["code"])


@pytest.mark.parametrize(
    ("field", "value", "body"),
    [
        ("#gen-n", str(MAX_N + 4), {"n": MAX_N + 4, "seed": 1}),
        ("#gen-seed", "-5", {"n": 1, "seed": -5}),
    ],
)
def test_a_bad_request_shows_the_api_message(
    page: Any, server: Server, field: str, value: str, body: dict[str, Any]
) -> None:
    open_page(page, server)
    page.select_option("#gen-model", RGB_GENERATOR)
    page.fill("#gen-n", "1")
    page.fill("#gen-seed", "1")
    page.fill(field, value)
    page.click("#gen-submit")
    refusal = httpx.post(server.url + "generate", json={"model": RGB_GENERATOR, **body}).json()["error"]
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-message")).to_have_text(refusal["message"])
    expect(page.locator("#error-status")).to_have_text("422")


def test_with_keys_required_the_page_asks_for_one_then_works(page: Any, keyed_server: Server) -> None:
    page.goto(keyed_server.url)
    key_form = page.locator("#key-form")
    expect(key_form).to_be_visible()
    expect(page.locator("#key-message")).to_contain_text("this server requires an API key")
    page.fill("#api-key", "not-the-key-at-all-0000")
    page.click("#key-form button")
    expect(page.locator("#key-message")).to_have_text("the API key is not valid")
    page.fill("#api-key", API_KEY)
    page.click("#key-form button")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(key_form).to_be_hidden()
    generate(page, RGB_GENERATOR, 2, seed="5")
    expect(page.locator("#gen-grid img")).to_have_count(2)
    # The key stays for this tab's session: a reload needs no new one.
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(key_form).to_be_hidden()


@pytest.mark.parametrize("tab", ["generate", "explore", "upscale"])
def test_usable_on_a_phone_sized_screen(page: Any, server: Server, tab: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    open_page(page, server, tab)
    if tab == "generate":
        generate(page, RGB_GENERATOR, 6, seed="8")
        expect(page.locator("#gen-grid img")).to_have_count(6)
    elif tab == "explore":
        page.select_option("#explore-model", RGB_GENERATOR)
        page.click("#explore-submit")
        expect(page.locator("#explore-animation-box")).to_be_visible()
    # Nothing wider than the screen but what scrolls inside its own box (the strip, the comparison).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    submit = page.locator(f"#{tab} button.primary")
    box = submit.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
