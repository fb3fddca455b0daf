"""The trained digits cGAN: committed weights, the training script, its report, and the exported entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zoo import build as zoo_build
from zoo.build import BuildContext, build_repository
from zoo.training import train_cgan_digits as cgan

pytestmark = pytest.mark.xdist_group("zoo")

WEIGHTS_DIR = zoo_build.DEFAULT_SRGAN_DIR
TINY_TRAINING = ["--steps", "3", "--log-every", "2", "--eval-per-class", "2", "--no-progress"]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEIGHTS_DIR / cgan.REPORT_FILENAME).read_text())
    return data


@pytest.fixture(scope="module")
def trained(report: dict[str, Any]) -> Any:
    return cgan.load_generator(
        WEIGHTS_DIR / cgan.WEIGHTS_FILENAME, report["architecture_options"]["latent_size"]
    )


@pytest.fixture(scope="module")
def classifier() -> Any:
    return cgan.fit_classifier(cgan.load_digits())[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output of the real training script on a budget of three steps."""
    out = tmp_path_factory.mktemp("cgan")
    cgan.main(["--out", str(out), "--grid", str(out / "grid.png"), *TINY_TRAINING])
    return out


@pytest.fixture(scope="module")
def digits_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding the digits-cgan entry, built by the zoo's build from the committed weights."""
    root = tmp_path_factory.mktemp("zoo")
    ctx = BuildContext(repo=root / "models", work_dir=root / "work")
    assert build_repository(ctx, only=["digits-cgan"]) == {"digits-cgan": "built"}
    return ctx.repo


def test_committed_weights_are_small_and_load_into_the_architecture(trained: Any) -> None:
    labels = np.arange(10, dtype=np.int32)[:, None]
    images = np.asarray(trained([np.zeros((10, 32), np.float32), labels], training=False))

    assert (WEIGHTS_DIR / cgan.WEIGHTS_FILENAME).stat().st_size < 500_000
    assert images.shape == (10, 8, 8, 1)
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_the_report_accuracy_is_what_the_committed_weights_give(
    report: dict[str, Any], trained: Any, classifier: Any
) -> None:
    evaluation = report["evaluation"]
    measured = cgan.label_accuracy(
        trained, classifier, evaluation["samples_per_class"], evaluation["latent_seed"]
    )
    reported = evaluation["label_accuracy"]

    assert reported["overall"] >= 0.9
    assert measured["overall"] == pytest.approx(reported["overall"], abs=0.005)
    for digit, accuracy in reported["per_class"].items():
        assert measured["per_class"][digit] == pytest.approx(accuracy, abs=0.021)  # ≤ 2 flips of 100


def test_the_label_not_the_noise_decides_the_digit(trained: Any, classifier: Any) -> None:
    """The same ten latents, given each label in turn, are read as that label."""
    z = np.random.default_rng(3).standard_normal((10, 32)).astype(np.float32)
    for digit in range(10):
        images = np.asarray(trained([z, np.full((10, 1), digit, np.int32)], training=False))
        predicted = classifier.predict(images.reshape(10, -1))
        assert (predicted == digit).mean() >= 0.8, (digit, predicted)


def test_tiny_run_writes_weights_report_log_and_grid(tiny_run: Path) -> None:
    from PIL import Image

    report = json.loads((tiny_run / cgan.REPORT_FILENAME).read_text())
    log = (tiny_run / cgan.LOG_FILENAME).read_text()

    assert report["steps"] == 3
    assert report["architecture_options"] == {"latent_size": 32, "classes": 10}
    assert [p["step"] for p in report["history"]] == [2, 3]
    assert set(report["evaluation"]["label_accuracy"]["per_class"]) == {str(d) for d in range(10)}
    assert report["evaluation"]["classifier_accuracy_on_real_held_out"] > 0.9
    assert "step 2" in log and "3 steps in" in log
    cgan.load_generator(tiny_run / cgan.WEIGHTS_FILENAME, 32)
    with Image.open(tiny_run / "grid.png") as grid:
        assert grid.height == 10 * (8 * 6 + 2) + 2  # ten rows, one per digit


def test_training_is_repeatable_with_the_same_seed(tiny_run: Path, tmp_path: Path) -> None:
    cgan.main(["--out", str(tmp_path), *TINY_TRAINING])
    first = cgan.load_generator(tiny_run / cgan.WEIGHTS_FILENAME, 32).get_weights()
    second = cgan.load_generator(tmp_path / cgan.WEIGHTS_FILENAME, 32).get_weights()

    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_exported_entry_has_ten_named_classes_and_obeys_them(digits_repo: Path, classifier: Any) -> None:
    import onnxruntime as ort

    card = json.loads((digits_repo / "digits-cgan" / "model.json").read_text())
    session = ort.InferenceSession(
        str(digits_repo / "digits-cgan" / card["file"]), providers=["CPUExecutionProvider"]
    )
    rows = np.zeros((100, card["latent_size"] + 10), np.float32)
    rows[:, : card["latent_size"]] = np.random.default_rng(5).standard_normal((100, card["latent_size"]))
    labels = np.repeat(np.arange(10), 10)
    rows[np.arange(100), card["latent_size"] + labels] = 1.0
    (images,) = session.run(None, {card["input_name"]: rows})

    assert card["condition"]["classes"] == 10
    assert card["condition"]["class_names"] == [str(d) for d in range(10)]
    assert card["condition"]["source"] == "index"
    assert card["input_shape"][1] == 32 + 10
    assert (card["height"], card["width"], card["channels"]) == (8, 8, 1)
    assert card["demo_weights"] is False and "trained" in card["description"]
    assert (classifier.predict(images.reshape(100, -1)) == labels).mean() >= 0.9
