"""Sources other than the built-ins: genuine tf.keras 2.x files, a user builder, a plain tf.Module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.api import export_file
from export.graph_passes import asymmetric_conv_transposes
from export.loaders import load_source
from tests.export.conftest import FIXTURES, randomize

REFERENCE = np.load(FIXTURES / "reference.npz")

pytestmark = pytest.mark.xdist_group("export")


@pytest.mark.parametrize(
    ("file", "kwargs", "reference", "inputs"),
    [
        ("mlp_leaky.h5", {}, "mlp_leaky", "latent"),
        ("dcgan_k5.h5", {}, "dcgan_k5", "latent"),
        ("dcgan_k5_savedmodel", {}, "dcgan_k5", "latent"),
        ("lambda_upscaler.h5", {"unsafe": True}, "lambda_upscaler", "image"),
        (
            "faces64_latent8_ngf4.h5",
            {"architecture": "dcgan-faces64", "architecture_options": {"latent_size": 8, "ngf": 4}},
            "faces64_latent8_ngf4",
            "latent",
        ),
    ],
)
def test_tf_keras_2_files_load_faithfully(file: str, kwargs: dict, reference: str, inputs: str) -> None:
    """Keras 3 (or TensorFlow alone) reproduces what tf.keras 2.x computed with these files."""
    source = load_source(FIXTURES / file, **kwargs)
    np.testing.assert_allclose(source.predict(REFERENCE[inputs]), REFERENCE[reference], atol=1e-5)


def test_legacy_h5_exports(tmp_path: Path) -> None:
    mlp = export_file(FIXTURES / "mlp_leaky.h5", tmp_path, "mlp")
    assert mlp.flat_output and (mlp.height, mlp.width, mlp.channels) == (8, 8, 3)  # 192 = 8·8·3 inferred
    assert mlp.source.format == "h5"

    dcgan = export_file(FIXTURES / "dcgan_k5.h5", tmp_path, "dcgan")
    assert (dcgan.height, dcgan.width, dcgan.channels, dcgan.latent_size) == (16, 16, 3, 8)
    assert any(p.startswith("symmetric-conv-transpose (2)") for p in dcgan.graph_passes)

    upscaler = export_file(
        FIXTURES / "lambda_upscaler.h5", tmp_path, "lam", unsafe=True, input_range=(0.0, 1.0)
    )
    assert upscaler.kind == "upscaler" and upscaler.scale == 2
    for card in (mlp, dcgan, upscaler):
        assert card.parity.max_abs_error is not None and card.parity.max_abs_error <= 1e-4


def test_keras2_savedmodel_exports_without_keras(tmp_path: Path) -> None:
    card = export_file(FIXTURES / "dcgan_k5_savedmodel", tmp_path, "sm")
    assert card.source.format == "savedmodel"
    assert card.output_range.low == -1.0  # read from the graph's final Tanh: no architecture given
    import onnx

    assert asymmetric_conv_transposes(onnx.load(str(tmp_path / "sm" / "model.onnx"))) == []


def test_savedmodel_of_a_plain_tf_module(tmp_path: Path) -> None:
    """`tf.saved_model.save` of a non-Keras tf.Module: the signature alone is converted."""
    import tensorflow as tf

    class Generator(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(5)
            self.w = tf.Variable(rng.normal(0, 0.3, (6, 4 * 4 * 3)).astype(np.float32))
            self.b = tf.Variable(rng.normal(0, 0.1, (4 * 4 * 3,)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="noise")])
        def __call__(self, z):
            return tf.reshape(tf.sigmoid(tf.matmul(z, self.w) + self.b), (-1, 4, 4, 3))

    directory = tmp_path / "module"
    module = Generator()
    tf.saved_model.save(module, str(directory), signatures=module.__call__.get_concrete_function())

    card = export_file(directory, tmp_path / "repo", "module-gen")
    assert card.kind == "generator" and card.latent_size == 6
    assert (card.height, card.width, card.channels) == (4, 4, 3)
    assert (card.output_range.low, card.output_range.high) == (0.0, 1.0)  # final Sigmoid
    assert card.source.format == "savedmodel" and len(card.source.sha256) == 64
    session = ort.InferenceSession(str(tmp_path / "repo" / "module-gen" / "model.onnx"))
    z = np.zeros((7, 6), np.float32)
    np.testing.assert_allclose(session.run(None, {"z": z})[0], module(z).numpy(), atol=1e-6)


def test_user_builder_with_weights(tmp_path: Path) -> None:
    from tests.export.user_builder import build_generator

    model = randomize(build_generator(latent_size=16, width=8), 11)
    weights = tmp_path / "gen.weights.h5"
    model.save_weights(weights)
    card = export_file(
        weights,
        tmp_path / "repo",
        "mine",
        architecture="tests.export.user_builder:build_generator",
        architecture_options={"latent_size": 16, "width": 8},
    )
    assert card.source.architecture == "tests.export.user_builder:build_generator"
    assert card.source.format == "weights"
    assert (card.height, card.width, card.channels, card.latent_size) == (12, 12, 3, 16)
    assert (card.output_range.low, card.output_range.high) == (0.0, 1.0)
    assert card.parity.max_abs_error is not None and 0 < card.parity.max_abs_error <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "repo" / "mine" / "model.onnx"))
    z = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"z": z})[0], model(z).numpy(), atol=1e-4)


def test_upscaler_built_for_one_size_is_verified_at_others(tmp_path: Path) -> None:
    """Input((32, 32, 3)) in Keras, yet fully convolutional: the ONNX graph takes any size, checked."""
    import keras
    from keras import layers

    from export.api import export_keras_model
    from export.architectures import PixelShuffle

    lr = keras.Input((32, 32, 3))
    x = PixelShuffle(2)(layers.Conv2D(12, 3, padding="same")(lr))
    model = randomize(keras.Model(lr, layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x)), 4)
    card = export_keras_model(model, tmp_path, "fixed", input_range=(0.0, 1.0))
    assert card.input_shape == [None, None, None, 3] and card.scale == 2
    assert [1, 17, 23, 3] in [c.input_shape for c in card.parity.cases]
    assert card.source.format == "keras" and card.source.path.startswith("<in-memory")


def test_fp16_variant(tmp_path: Path, small_keras_file: Path) -> None:
    card = export_file(small_keras_file, tmp_path, "half", fp16=True)
    assert card.fp16 is not None and card.fp16.accepted and card.fp16.psnr_db >= 40
    session = ort.InferenceSession(str(tmp_path / "half" / "model.fp16.onnx"))
    assert (
        session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    )
    (y,) = session.run(None, {"z": np.zeros((2, 8), np.float32)})
    assert y.shape == (2, 16, 16, 3) and y.dtype == np.float32


def test_fp16_variant_rejected_below_40_db(tmp_path: Path, small_keras_file: Path) -> None:
    """Judged against the declared output range: a tiny range makes fp16 rounding count for a lot."""
    card = export_file(small_keras_file, tmp_path, "tight", fp16=True, output_range=(-1e-3, 1e-3))
    assert card.fp16 is not None and not card.fp16.accepted and card.fp16.psnr_db < 40
    assert not (tmp_path / "tight" / "model.fp16.onnx").exists()
