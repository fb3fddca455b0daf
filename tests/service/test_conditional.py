"""Conditional generators: label / labels on /generate and /invocations, the class spread, grids, errors.

The repository here is built without TensorFlow: small ONNX graphs written with `onnx.helper`.
Each conditional graph is `tanh(z @ W)` over `z = latent ++ one_hot(class)`, flat 8x8 grayscale
output. The one-hot rows of `W` add a constant per class (a grey level far from the others); the
latent rows add a little noise, so every image's mean brightness tells its class and the seed still
matters.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.onnx_models import write_conditional_entry
from tests.service.sample_images import open_image

LATENT = 8
EDGE = 8
NAMED = "cgan-named"
UNNAMED = "cgan-plain"
UNCONDITIONAL = "gan-plain"
CLASS_NAMES = ["cat", "dog", "ship", "frog"]
#: Pre-tanh offset each class adds to every pixel of the named model: -1.5, -0.5, 0.5, 1.5.
CLASS_OFFSETS = np.linspace(-1.5, 1.5, len(CLASS_NAMES))
#: The grey level each class's images sit around: tanh of the offset, mapped from [-1, 1] to 0..255.
CLASS_LEVELS = [(np.tanh(o) + 1) * 127.5 for o in CLASS_OFFSETS]


def _write_generator(repo: Path, name: str, classes: int, class_names: list[str] | None) -> None:
    write_conditional_entry(repo, name, LATENT, EDGE, classes, class_names)


@pytest.fixture(scope="module")
def conditional_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two conditional generators (4 named classes; 3 unnamed) and an unconditional one."""
    repo = tmp_path_factory.mktemp("conditional-models")
    _write_generator(repo, NAMED, 4, CLASS_NAMES)
    _write_generator(repo, UNNAMED, 3, None)
    _write_generator(repo, UNCONDITIONAL, 0, None)
    return repo


@pytest.fixture(scope="module")
def cond_client(conditional_repo: Path) -> Iterator[TestClient]:
    """The app serving the conditional repository (lifespan and warm-up included)."""
    settings = Settings(models_dir=conditional_repo, max_n=128, warmup_batch_sizes=[1, 4], device="cpu")
    with TestClient(create_app(settings)) as client:
        yield client


def _pixels(client: TestClient, **body: object) -> np.ndarray:
    response = client.post("/generate", json={"model": NAMED, "format": "npy", **body})
    assert response.status_code == 200, response.text
    return np.asarray(np.load(io.BytesIO(response.content)))


def _class_of(image: np.ndarray) -> int:
    """The class whose grey level is nearest the image's mean brightness."""
    return int(np.argmin([abs(float(image.mean()) - level) for level in CLASS_LEVELS]))


def _classes_of(images: np.ndarray) -> list[int]:
    return [_class_of(image) for image in images]


def test_the_label_changes_the_image(cond_client: TestClient) -> None:
    cat = cond_client.post("/generate", json={"model": NAMED, "seed": 3, "label": 0})
    frog = cond_client.post("/generate", json={"model": NAMED, "seed": 3, "label": 3})
    assert cat.status_code == frog.status_code == 200
    assert cat.headers["content-type"] == "image/png"
    assert cat.content != frog.content
    assert _class_of(np.asarray(open_image(cat.content))) == 0
    assert _class_of(np.asarray(open_image(frog.content))) == 3
    assert (cat.headers["x-labels"], frog.headers["x-labels"]) == ("0", "3")


def test_seed_and_label_reproduce_the_same_bytes(cond_client: TestClient) -> None:
    first = cond_client.post("/generate", json={"model": NAMED, "n": 3, "seed": 11, "label": 2})
    again = cond_client.post("/generate", json={"model": NAMED, "n": 3, "seed": 11, "label": 2})
    other_seed = cond_client.post("/generate", json={"model": NAMED, "n": 3, "seed": 12, "label": 2})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/zip"
    assert first.content == again.content
    assert other_seed.content != first.content


def test_seed_draws_the_same_latents_as_an_unconditional_request(cond_client: TestClient) -> None:
    # The docs promise the latents come from the seed exactly as before and the one-hot is appended.
    latents = np.random.Generator(np.random.PCG64(5)).standard_normal((2, LATENT), dtype=np.float32)
    by_seed = _pixels(cond_client, n=2, seed=5, label="ship")
    by_latents = _pixels(cond_client, latents=latents.tolist(), label=2)
    np.testing.assert_array_equal(by_seed, by_latents)


def test_class_name_and_index_give_the_same_image(cond_client: TestClient) -> None:
    by_name = _pixels(cond_client, seed=4, label="dog")
    by_index = _pixels(cond_client, seed=4, label=1)
    by_digit_string = _pixels(cond_client, seed=4, label="1")
    np.testing.assert_array_equal(by_name, by_index)
    np.testing.assert_array_equal(by_name, by_digit_string)
    assert _classes_of(by_name) == [1]


def test_labels_give_one_class_per_image_and_set_n(cond_client: TestClient) -> None:
    response = cond_client.post(
        "/generate", json={"model": NAMED, "seed": 1, "labels": [3, "cat", 2], "format": "npy"}
    )
    assert response.status_code == 200
    assert response.headers["x-images"] == "3"
    assert response.headers["x-labels"] == "3,0,2"
    assert _classes_of(np.load(io.BytesIO(response.content))) == [3, 0, 2]


def test_labels_with_explicit_latents(cond_client: TestClient) -> None:
    latents = np.zeros((2, LATENT), np.float32).tolist()
    images = _pixels(cond_client, latents=latents, labels=["frog", "dog"])
    assert _classes_of(images) == [3, 1]
    # Zero latents: each image is exactly its class's grey level.
    assert {int(v) for v in images[0].ravel()} == {round(CLASS_LEVELS[3])}


@pytest.mark.parametrize(
    ("n", "expected"),
    [(8, [0, 0, 1, 1, 2, 2, 3, 3]), (6, [0, 0, 1, 2, 2, 3]), (2, [0, 2]), (1, [0])],
)
def test_without_labels_the_images_spread_over_the_classes(
    cond_client: TestClient, n: int, expected: list[int]
) -> None:
    response = cond_client.post("/generate", json={"model": NAMED, "n": n, "seed": 2, "format": "npy"})
    assert response.status_code == 200
    assert response.headers["x-labels"] == ",".join(map(str, expected))
    assert _classes_of(np.load(io.BytesIO(response.content))) == expected


def test_grid_without_labels_has_one_class_per_row(cond_client: TestClient) -> None:
    grid = _pixels(cond_client, n=12, seed=8, layout="grid")
    assert grid.shape == (4 * EDGE, 3 * EDGE, 1)  # 4 classes = 4 rows of 12 // 4 = 3 images
    for row in range(4):
        for column in range(3):
            cell = grid[row * EDGE : (row + 1) * EDGE, column * EDGE : (column + 1) * EDGE]
            assert _class_of(cell) == row


def test_grid_png_has_one_class_per_row(cond_client: TestClient) -> None:
    response = cond_client.post("/generate", json={"model": NAMED, "n": 8, "seed": 8, "layout": "grid"})
    assert response.status_code == 200
    grid = np.asarray(open_image(response.content))
    assert grid.shape == (4 * EDGE, 2 * EDGE)
    rows = [_class_of(grid[r * EDGE : (r + 1) * EDGE]) for r in range(4)]
    assert rows == [0, 1, 2, 3]


def test_grid_keeps_the_square_layout_when_classes_do_not_fill_rows(cond_client: TestClient) -> None:
    assert _pixels(cond_client, n=6, seed=8, layout="grid").shape == (2 * EDGE, 3 * EDGE, 1)
    # An explicit label is one class for all: no class rows, the most square grid.
    assert _pixels(cond_client, n=8, seed=8, layout="grid", label=1).shape == (3 * EDGE, 3 * EDGE, 1)


def test_grid_columns(cond_client: TestClient) -> None:
    grid = _pixels(cond_client, n=8, seed=8, layout="grid", columns=4)
    assert grid.shape == (2 * EDGE, 4 * EDGE, 1)
    # Row by row: the first row holds classes 0, 0, 1, 1.
    cells = [_class_of(grid[:EDGE, c * EDGE : (c + 1) * EDGE]) for c in range(4)]
    assert cells == [0, 0, 1, 1]
    unconditional = cond_client.post(
        "/generate",
        json={"model": UNCONDITIONAL, "n": 5, "layout": "grid", "columns": 5, "format": "npy"},
    )
    assert np.load(io.BytesIO(unconditional.content)).shape == (EDGE, 5 * EDGE, 1)


def test_json_meta_lists_the_labels(cond_client: TestClient) -> None:
    response = cond_client.post(
        "/generate",
        json={"model": NAMED, "n": 4, "seed": 1},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["labels"] == [0, 1, 2, 3]
    assert len(body["images"]) == 4
    plain = cond_client.post(
        "/generate", json={"model": UNCONDITIONAL, "seed": 1}, headers={"accept": "application/json"}
    )
    assert plain.json()["labels"] is None
    assert "x-labels" not in plain.headers


def test_x_labels_is_left_out_above_64_images(cond_client: TestClient) -> None:
    response = cond_client.post(
        "/generate",
        json={"model": NAMED, "n": 65, "seed": 1, "format": "npy"},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 200
    assert "x-labels" not in response.headers
    assert response.json()["labels"] == [i * 4 // 65 for i in range(65)]


@pytest.mark.parametrize(
    ("model", "body", "message_parts"),
    [
        (NAMED, {"label": 4}, ["label 4 is out of range", "0 .. 3"]),
        (NAMED, {"label": -1}, ["label -1 is out of range", "0 .. 3"]),
        (NAMED, {"label": "horse"}, ["unknown class name 'horse'", "cat, dog, ship, frog"]),
        (NAMED, {"labels": [0, 9]}, ["labels[1]", "label 9 is out of range", "0 .. 3"]),
        (NAMED, {"labels": ["cat", "Dog"]}, ["labels[1]", "'Dog'", "cat, dog, ship, frog"]),
        (UNNAMED, {"label": "cat"}, ["unknown class name 'cat'", "0 .. classes-1"]),
        (UNNAMED, {"label": 3}, ["0 .. 2"]),
        (UNCONDITIONAL, {"label": 1}, [f"model {UNCONDITIONAL} is not conditional", "leave out label"]),
        (UNCONDITIONAL, {"labels": [0]}, ["is not conditional", "leave out labels"]),
    ],
)
def test_label_errors_name_the_valid_choices(
    cond_client: TestClient, model: str, body: dict[str, object], message_parts: list[str]
) -> None:
    response = cond_client.post("/generate", json={"model": model, **body})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_label"
    for part in message_parts:
        assert part in error["message"]


@pytest.mark.parametrize(
    ("body", "location", "message_parts"),
    [
        ({"label": True}, "body.label", ["label is true", "class index", "class name"]),
        ({"labels": [0, False]}, "body.labels", ["labels[1] is false"]),
        ({"label": 1.5}, "body.label", ["label is 1.5", "class index"]),
        ({"labels": [None]}, "body.labels", ["labels[0] is null"]),
        ({"label": "x" * 201}, "body.label", ["201 characters long"]),
        ({"label": 1, "labels": [1]}, "body", ["either label", "or labels", "not both"]),
        ({"n": 3, "labels": [0, 1]}, "body", ["n is 3 but 2 labels"]),
        ({"latents": [[0.0] * LATENT], "labels": [0, 1]}, "body", ["2 labels for 1 latent vectors"]),
        ({"labels": []}, "body.labels", ["at least 1"]),
        ({"n": 4, "columns": 2}, "body", ["columns applies to layout=grid"]),
        ({"n": 4, "layout": "grid", "columns": 5}, "body", ["columns is 5 but only 4 images"]),
    ],
)
def test_malformed_label_requests_are_refused(
    cond_client: TestClient, body: dict[str, object], location: str, message_parts: list[str]
) -> None:
    response = cond_client.post("/generate", json={"model": NAMED, **body})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["fields"][0]["location"] == location
    for part in message_parts:
        assert part in error["message"]


def test_latents_must_hold_only_the_latent_part(cond_client: TestClient) -> None:
    response = cond_client.post(
        "/generate", json={"model": NAMED, "latents": [[0.0] * (LATENT + 4)], "label": 0}
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_latents",
        "message": f"latents[0] has {LATENT + 4} values; this model takes {LATENT}",
    }


def test_invocations_take_labels(cond_client: TestClient) -> None:
    body = {"model": NAMED, "n": 2, "seed": 6, "labels": ["frog", "cat"]}
    invoked = cond_client.post("/invocations", json=body)
    generated = cond_client.post("/generate", json=body)
    assert invoked.status_code == 200
    assert invoked.headers["content-type"] == "application/zip"
    assert invoked.content == generated.content
    with zipfile.ZipFile(io.BytesIO(invoked.content)) as archive:
        images = [np.asarray(open_image(archive.read(name))) for name in archive.namelist()]
    assert _classes_of(np.stack(images)) == [3, 0]

    as_json = cond_client.post(
        "/invocations",
        json={"model": NAMED, "seed": 6, "label": "dog"},
        headers={"accept": "application/json"},
    )
    assert as_json.status_code == 200
    assert as_json.json()["labels"] == [1]


def test_invocations_refuse_bad_labels(cond_client: TestClient) -> None:
    wrong = cond_client.post("/invocations", json={"model": NAMED, "label": "horse"})
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "invalid_label"
    assert "cat, dog, ship, frog" in wrong.json()["error"]["message"]
    boolean = cond_client.post("/invocations", json={"model": NAMED, "label": False})
    assert boolean.status_code == 422
    assert boolean.json()["error"]["code"] == "invalid_request"


def test_models_lists_the_classes(cond_client: TestClient) -> None:
    lean = {m["name"]: m for m in cond_client.get("/models").json()["models"]}
    assert (lean[NAMED]["classes"], lean[NAMED]["class_names"]) == (4, CLASS_NAMES)
    assert (lean[UNNAMED]["classes"], lean[UNNAMED]["class_names"]) == (3, None)
    assert lean[UNCONDITIONAL]["classes"] is None
    models = {m["name"]: m for m in cond_client.get("/models", params={"full": "true"}).json()["models"]}
    named = models[NAMED]["card"]
    assert named["condition"]["classes"] == 4
    assert named["condition"]["class_names"] == CLASS_NAMES
    assert named["input_shape"] == [None, LATENT + 4]
    assert models[UNNAMED]["card"]["condition"]["class_names"] is None
    assert models[UNCONDITIONAL]["card"]["condition"] is None
