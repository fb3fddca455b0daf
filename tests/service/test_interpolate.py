"""`interpolate` on /generate and /invocations: a walk from one seed or latent to another.

The end frames are the images of the two seeds, the frame count is `steps`, slerp keeps the latent
norm (seen through a generator whose image is its latent), animations decode with one frame per
step, the same request gives the same bytes, and every misuse is a 422 saying what to change.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import helper
from PIL import Image

from service.app import create_app
from service.card import ValueRange
from service.latents import interpolate_latents
from service.settings import Settings
from tests.service.onnx_models import conv_generator, graph_model, write_conditional_entry, write_entry

RGB = "rgb-walk"
GRAY = "gray-walk"
LATENT_IMAGE = "latent-image"
CONDITIONAL = "cgan-walk"
LATENT = 16
#: The latent-image generator's output range: its pixels are its latent, 8-bit quantised over ±8.
LATENT_RANGE = 8.0
MAX_N = 32


def _latent_image_generator() -> Any:
    """A generator whose 4x4 grayscale image is its own latent vector (flat output, identity graph)."""
    node = helper.make_node("Identity", ["z"], ["image"])
    z = helper.make_tensor_value_info("z", 1, ["N", LATENT])
    image = helper.make_tensor_value_info("image", 1, ["N", LATENT])
    return graph_model(LATENT_IMAGE, [node], [z], [image], {})


@pytest.fixture(scope="module")
def walk_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An RGB and a grayscale generator, one whose image is its latent, and a conditional one."""
    repo: Path = tmp_path_factory.mktemp("walk-models")
    card: dict[str, Any] = {"kind": "generator", "input_name": "z", "output_name": "image"}
    for name, channels, seed in ((RGB, 3, 40), (GRAY, 1, 50)):
        write_entry(
            repo,
            conv_generator(name, LATENT, 16, channels, seed=seed),
            name=name,
            input_shape=[None, LATENT],
            output_shape=[None, 16, 16, channels],
            channels=channels,
            height=16,
            width=16,
            latent_size=LATENT,
            **card,
        )
    write_entry(
        repo,
        _latent_image_generator(),
        name=LATENT_IMAGE,
        input_shape=[None, LATENT],
        output_shape=[None, LATENT],
        channels=1,
        height=4,
        width=4,
        flat_output=True,
        latent_size=LATENT,
        output_range=ValueRange(low=-LATENT_RANGE, high=LATENT_RANGE),
        **card,
    )
    write_conditional_entry(repo, CONDITIONAL, 8, 8, 4)
    settings = Settings(models_dir=repo, max_n=MAX_N, warmup_batch_sizes=[1], device="cpu")
    with TestClient(create_app(settings)) as client:
        yield client


def _post(client: TestClient, body: dict[str, Any], path: str = "/generate", **headers: str) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def _pixels(client: TestClient, **body: Any) -> np.ndarray:
    """The uint8 images of a /generate body, (n, H, W, C)."""
    return np.asarray(np.load(io.BytesIO(_post(client, {"format": "npy", **body}).content)))


def _walk(start: Any, end: Any, steps: int, **options: Any) -> dict[str, Any]:
    return {"from": start, "to": end, "steps": steps, **options}


@pytest.mark.parametrize("method", ["slerp", "lerp"])
@pytest.mark.parametrize("truncation", [None, 0.8])
def test_the_end_frames_are_the_images_of_the_two_seeds(
    walk_client: TestClient, method: str, truncation: float | None
) -> None:
    frames = _pixels(walk_client, model=RGB, interpolate=_walk(3, 9, 6, method=method), truncation=truncation)
    first = _pixels(walk_client, model=RGB, seed=3, truncation=truncation)[0]
    last = _pixels(walk_client, model=RGB, seed=9, truncation=truncation)[0]
    assert frames.shape == (6, 16, 16, 3)
    assert np.array_equal(frames[0], first)
    assert np.array_equal(frames[-1], last)
    assert not np.array_equal(frames[1], first) and not np.array_equal(frames[-2], last)


def test_an_end_can_be_a_latent(walk_client: TestClient) -> None:
    latent = np.random.default_rng(5).standard_normal(LATENT).round(3).tolist()
    frames = _pixels(walk_client, model=RGB, interpolate=_walk(latent, 9, 4))
    assert np.array_equal(frames[0], _pixels(walk_client, model=RGB, latents=[latent])[0])
    assert np.array_equal(frames[-1], _pixels(walk_client, model=RGB, seed=9)[0])


@pytest.mark.parametrize("steps", [2, 7, MAX_N])
def test_frame_count(walk_client: TestClient, steps: int) -> None:
    response = _post(walk_client, {"model": RGB, "interpolate": _walk(1, 2, steps)})
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-images"] == str(steps)
    assert "x-seed" not in response.headers
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert names == [f"{i:04d}.png" for i in range(steps)]
    strip = _post(
        walk_client, {"model": RGB, "interpolate": _walk(1, 2, steps), "layout": "grid", "columns": steps}
    )
    assert Image.open(io.BytesIO(strip.content)).size == (16 * steps, 16)


def _latents_seen(frames: np.ndarray) -> np.ndarray:
    """The latents of the latent-image generator's frames, back from their 8-bit pixels."""
    return frames.reshape(len(frames), LATENT).astype(np.float64) / 255 * 2 * LATENT_RANGE - LATENT_RANGE


#: The latent-image generator quantises each value to 16/255: a latent's norm is off by at most this.
NORM_TOLERANCE = np.sqrt(LATENT) * LATENT_RANGE / 255


def test_slerp_keeps_the_latent_norm(walk_client: TestClient) -> None:
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, LATENT))
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    ends = (a.tolist(), b.tolist())
    slerp = _latents_seen(_pixels(walk_client, model=LATENT_IMAGE, interpolate=_walk(*ends, 9)))
    lerp = _latents_seen(_pixels(walk_client, model=LATENT_IMAGE, interpolate=_walk(*ends, 9, method="lerp")))
    norm = np.linalg.norm(a)
    assert np.abs(np.linalg.norm(slerp, axis=1) - norm).max() <= NORM_TOLERANCE
    # The straight line cuts inside the sphere: its middle is well short of the ends' norm.
    assert np.linalg.norm(lerp[4]) < norm - 5 * NORM_TOLERANCE


def test_slerp_between_different_norms_moves_the_norm_linearly(walk_client: TestClient) -> None:
    seeds = _pixels(walk_client, model=LATENT_IMAGE, interpolate=_walk(21, 22, 5))
    norms = np.linalg.norm(_latents_seen(seeds), axis=1)
    assert np.abs(norms - np.linspace(norms[0], norms[-1], 5)).max() <= 2 * NORM_TOLERANCE


def test_interpolated_latents_exactly() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 100)).astype(np.float32)
    b_same_norm = b * (np.linalg.norm(a) / np.linalg.norm(b))
    path = interpolate_latents(a, b_same_norm, 16)
    assert np.allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-6)
    path = interpolate_latents(a, b, 16)
    assert np.array_equal(path[0], a) and np.array_equal(path[-1], b)
    expected = np.linspace(np.linalg.norm(a), np.linalg.norm(b), 16)
    assert np.allclose(np.linalg.norm(path, axis=1), expected, rtol=1e-6)
    # Each step turns the direction by the same angle.
    units = path / np.linalg.norm(path, axis=1, keepdims=True)
    turns = np.arccos(np.clip(np.sum(units[1:] * units[:-1], axis=1), -1, 1))
    assert np.allclose(turns, turns[0], rtol=1e-3)


def _frames(data: bytes) -> tuple[list[np.ndarray], list[int]]:
    """An animation's frames as RGB arrays, and each frame's duration in ms."""
    image = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        image.load()  # WebP sets a frame's duration only once it is decoded
        frames.append(np.asarray(image.convert("RGB")))
        durations.append(int(image.info["duration"]))
    return frames, durations


@pytest.mark.parametrize(
    ("image_format", "media_type"), [(None, "image/webp"), ("webp", "image/webp"), ("gif", "image/gif")]
)
def test_the_animation_has_a_frame_per_step(
    walk_client: TestClient, image_format: str | None, media_type: str
) -> None:
    body: dict[str, Any] = {
        "model": RGB,
        "interpolate": _walk(4, 8, 12),
        "layout": "animation",
        "frame_ms": 80,
    }
    if image_format:
        body["format"] = image_format
    response = _post(walk_client, body)
    assert response.headers["content-type"] == media_type
    frames, durations = _frames(response.content)
    assert len(frames) == 12
    assert durations == [80] * 12
    if media_type == "image/webp":  # lossless: the frames are the exact images
        expected = _pixels(walk_client, model=RGB, interpolate=_walk(4, 8, 12))
        assert np.array_equal(np.stack(frames), expected)


def test_a_grayscale_gif_holds_the_exact_frames(walk_client: TestClient) -> None:
    body = {"model": GRAY, "interpolate": _walk(4, 8, 6), "layout": "animation", "format": "gif"}
    frames, durations = _frames(_post(walk_client, body).content)
    expected = _pixels(walk_client, model=GRAY, interpolate=_walk(4, 8, 6))
    assert np.array_equal(np.stack(frames)[..., :1], expected)
    assert durations == [100] * 6


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"layout": "grid", "format": "jpeg"},
        {"layout": "animation"},
        {"layout": "animation", "format": "gif", "frame_ms": 40},
    ],
)
def test_same_request_same_bytes(walk_client: TestClient, options: dict[str, Any]) -> None:
    body = {"model": RGB, "interpolate": _walk(31, 32, 8), **options}
    assert _post(walk_client, body).content == _post(walk_client, body).content


def test_zip_entries_carry_a_fixed_time(walk_client: TestClient) -> None:
    response = _post(walk_client, {"model": RGB, "interpolate": _walk(1, 2, 3)})
    times = {entry.date_time for entry in zipfile.ZipFile(io.BytesIO(response.content)).infolist()}
    assert times == {(1980, 1, 1, 0, 0, 0)}


def test_json_says_what_the_frames_are(walk_client: TestClient) -> None:
    response = walk_client.post(
        "/generate",
        json={"model": RGB, "interpolate": _walk(3, [0.5] * LATENT, 3, method="lerp")},
        headers={"accept": "application/json"},
    )
    body = response.json()
    assert body["interpolate"] == {"from": 3, "to": None, "steps": 3, "method": "lerp"}
    assert body["seed"] is None and body["n"] == 3 and len(body["images"]) == 3
    plain = walk_client.post("/generate", json={"model": RGB}, headers={"accept": "application/json"})
    assert plain.json()["interpolate"] is None


def test_the_label_is_every_frames_class(walk_client: TestClient) -> None:
    walk = _walk(5, 6, 4)
    labelled = _post(walk_client, {"model": CONDITIONAL, "interpolate": walk, "label": 2})
    assert labelled.headers["x-labels"] == "2,2,2,2"
    # Without a label every frame has class 0, the class of one image from a seed: the ends still match.
    default = _post(walk_client, {"model": CONDITIONAL, "interpolate": walk})
    assert default.headers["x-labels"] == "0,0,0,0"
    frames = _pixels(walk_client, model=CONDITIONAL, interpolate=walk)
    assert np.array_equal(frames[-1], _pixels(walk_client, model=CONDITIONAL, seed=6)[0])
    frames = _pixels(walk_client, model=CONDITIONAL, interpolate=walk, label=3)
    assert np.array_equal(frames[0], _pixels(walk_client, model=CONDITIONAL, seed=5, label=3)[0])


def test_invocations_walks_too(walk_client: TestClient) -> None:
    body = {"model": RGB, "interpolate": _walk(4, 8, 5), "layout": "animation"}
    direct = _post(walk_client, body)
    invoked = _post(walk_client, body, "/invocations")
    assert invoked.headers["content-type"] == "image/webp"
    assert invoked.content == direct.content
    gif = _post(walk_client, body, "/invocations", accept="image/gif")
    assert gif.headers["content-type"] == "image/gif"
    assert len(_frames(gif.content)[0]) == 5


@pytest.mark.parametrize(
    ("accept", "body", "message"),
    [
        ("image/png", {"layout": "animation"}, "layout=animation makes one animated image"),
        ("image/gif", {}, "format=gif is for animations"),
    ],
)
def test_invocations_accept_must_fit_the_layout(
    walk_client: TestClient, accept: str, body: dict[str, Any], message: str
) -> None:
    response = walk_client.post(
        "/invocations",
        json={"model": RGB, "interpolate": _walk(4, 8, 3), **body},
        headers={"accept": accept},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert message in response.json()["error"]["message"]


def test_upscaled_images_are_never_gifs(client: TestClient) -> None:
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, "PNG")
    response = client.post(
        "/invocations", content=image.getvalue(), headers={"content-type": "image/png", "accept": "image/gif"}
    )
    assert response.status_code == 422
    assert "format=gif is for animations" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        ({"interpolate": _walk(1, 2, 1)}, "body.interpolate.steps", "greater than or equal to 2"),
        ({"interpolate": _walk(1, 2, 65)}, "body.interpolate.steps", "less than or equal to 64"),
        ({"interpolate": _walk(1, 2, 4), "n": 4}, "body", "interpolate takes no n: the number of frames"),
        ({"interpolate": _walk(1, 2, 4), "seed": 1}, "body", "interpolate takes no seed: give the seeds as"),
        (
            {"interpolate": _walk(1, 2, 4), "latents": [[0.0] * LATENT]},
            "body",
            "interpolate takes no latents",
        ),
        ({"interpolate": _walk(1, 2, 4), "labels": [0]}, "body", "interpolate takes no labels: label gives"),
        (
            {"interpolate": _walk(True, 2, 4)},
            "body.interpolate.from",
            "interpolate.from is true: give a seed",
        ),
        ({"interpolate": _walk(1, -3, 4)}, "body.interpolate.to", "interpolate.to is seed -3"),
        ({"interpolate": _walk(1, [], 4)}, "body.interpolate.to", "interpolate.to is []"),
        ({"interpolate": _walk(1, [0.5, "x"], 4)}, "body.interpolate.to", 'interpolate.to[1] is "x"'),
        ({"interpolate": {"from": 1, "steps": 4}}, "body.interpolate.to", "Field required"),
        ({"interpolate": _walk(1, 2, 4, method="cubic")}, "body.interpolate.method", "'slerp' or 'lerp'"),
        ({"interpolate": _walk(1, 2, 4), "format": "gif"}, "body", "format=gif is for animations"),
        ({"interpolate": _walk(1, 2, 4), "layout": "grid", "format": "gif"}, "body", "format=gif is for"),
        (
            {"interpolate": _walk(1, 2, 4), "layout": "animation", "format": "png"},
            "body",
            "png cannot be animated",
        ),
        (
            {"interpolate": _walk(1, 2, 4), "frame_ms": 50},
            "body",
            "frame_ms applies to layout=animation only",
        ),
        (
            {"interpolate": _walk(1, 2, 4), "layout": "animation", "frame_ms": 5},
            "body.frame_ms",
            "greater than",
        ),
        (
            {"interpolate": _walk([0.1] * LATENT, [0.2] * LATENT, 4), "truncation": 1.0},
            "body",
            "both interpolate ends are latents",
        ),
    ],
)
def test_misuse_is_a_422_saying_what_to_change(
    walk_client: TestClient, body: dict[str, Any], location: str, message: str
) -> None:
    response = walk_client.post("/generate", json={"model": RGB, **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [field["location"] for field in error["fields"]] == [location]
    assert message in error["message"]


@pytest.mark.parametrize(
    ("walk", "code", "message"),
    [
        (
            _walk([0.5] * 3, 2, 4),
            "invalid_latents",
            "interpolate.from is a latent of 3 values; this model takes 16",
        ),
        (_walk([1.0] * LATENT, [-2.0] * LATENT, 4), "invalid_request", "opposite directions"),
    ],
)
def test_what_only_the_model_can_tell(
    walk_client: TestClient, walk: dict[str, Any], code: str, message: str
) -> None:
    response = walk_client.post("/generate", json={"model": RGB, "interpolate": walk})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert message in response.json()["error"]["message"]


def test_steps_above_the_servers_limit(client: TestClient) -> None:
    response = client.post("/generate", json={"interpolate": _walk(1, 2, 17)})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "too_many_images",
        "message": "17 images asked for; this server returns at most 16 per request",
    }


def test_opposite_ends_walk_straight_with_lerp(walk_client: TestClient) -> None:
    walk = _walk([1.0] * LATENT, [-2.0] * LATENT, 4, method="lerp")
    assert _pixels(walk_client, model=RGB, interpolate=walk).shape == (4, 16, 16, 3)
