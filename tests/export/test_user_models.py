"""Each way a new user's real model used to fail, reproduced as reported (issue 9, defects 1-8).

The success paths for every saved form live in the corpus (test_corpus.py); these tests pin the
messages and limits around them: what the user is told, and that it is told once, before the slow
conversion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.cli import main
from tests.export.conftest import FIXTURES, randomize

pytestmark = pytest.mark.xdist_group("export")

CORPUS_FILES = Path(__file__).parent / "corpus" / "files"


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, " ".join(captured.out.split()), " ".join(captured.err.split())


def _builder_module(directory: Path, name: str, source: str) -> None:
    """A user's builder module; each test names its own (a module is imported once per process)."""
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


NESTED_WRONG = """
    import keras
    from keras import layers

    def generator():
        noise = keras.Input((8,))
        body = keras.Sequential([layers.Dense(16), layers.BatchNormalization(), layers.Dense(40),
                                 layers.Dense(48, activation="tanh"), layers.Reshape((4, 4, 3))])
        return keras.Model(noise, body(noise))
"""


def _nested(dense: int = 48) -> Any:
    import keras
    from keras import layers

    noise = keras.Input((8,))
    body = keras.Sequential(
        [
            layers.Dense(16),
            layers.BatchNormalization(),
            layers.LeakyReLU(0.2),
            layers.Dense(dense, activation="tanh"),
            layers.Reshape((4, 4, 3)),
        ]
    )
    return keras.Model(noise, body(noise))


# 1. Nested sub-models ---------------------------------------------------------------------------


def test_nested_weights_mismatch_names_the_nested_layer_and_both_shapes(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    randomize(_nested(), 1).save_weights(tmp_path / "g.weights.h5")
    _builder_module(tmp_path, "nested_nets", NESTED_WRONG)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(
        capsys,
        "convert",
        "g.weights.h5",
        "--architecture",
        "nested_nets:generator",
        "--repo",
        "r",
        "--name",
        "g",
    )
    assert code == 2
    assert "layer 'sequential/dense_1' expects variable shapes [(16, 40), (40)]" in err
    assert "the file has [(16, 48), (48)]" in err


def test_legacy_nested_weights_mismatch_names_the_variable(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A genuine tf.keras 2 .hdf5 (Keras-GAN layout) against a builder with one layer too many."""
    _builder_module(
        tmp_path,
        "legacy_nets",
        """
        import keras
        from keras import layers

        def generator():
            noise = keras.Input((16,))
            body = keras.Sequential([layers.Dense(7 * 7 * 8), layers.Reshape((7, 7, 8)),
                                     layers.Conv2D(1, 3, padding="same", activation="tanh")])
            return keras.Model(noise, body(noise))
        """,
    )
    monkeypatch.chdir(tmp_path)
    source = CORPUS_FILES / "keras_gan_dcgan.hdf5"
    code, _, err = run(
        capsys, "convert", source, "--architecture", "legacy_nets:generator", "--repo", "r", "--name", "g"
    )
    assert code == 2
    assert "does not fit --architecture legacy_nets:generator" in err
    assert "layer #1 with weights" in err and "variable #1" in err and "has shape (16, 392)" in err


# 2. TF-op layers --------------------------------------------------------------------------------


def test_tf_op_outside_the_allow_list_is_refused_by_name(capsys, tmp_path: Path) -> None:
    for flags in ((), ("--unsafe",)):
        code, _, err = run(
            capsys,
            "convert",
            FIXTURES / "tf_op_cumsum.h5",
            "--repo",
            tmp_path,
            "--name",
            "c",
            "--input-range",
            "0,1",
            *flags,
        )
        assert code == 2
        assert "tf.math.cumsum" in err and "tf.nn.depth_to_space" in err
        assert "Unknown layer" not in err and "custom_object_scope" not in err


# 3. Tolerance relative to the output range ------------------------------------------------------


def test_default_tolerance_passes_real_error_and_fails_one_perturbed_weight(tmp_path: Path) -> None:
    """A 2-block SRGAN ×4: the real conversion error is far inside the default tolerance, while one
    perturbed kernel entry (+0.01) in the ONNX graph is far outside it."""
    import onnx
    from onnx import numpy_helper

    from export.api import DEFAULT_TOLERANCE, export_keras_model
    from export.architectures import build
    from export.source import from_keras
    from export.verify import OnnxRunner, compare_source, probe_inputs

    model = randomize(build("srgan-x4", blocks=2, filters=8), 5)
    card = export_keras_model(model, tmp_path, "sr", architecture="srgan-x4", preview=False)
    assert card.parity.max_relative_error is not None and card.parity.max_abs_error is not None
    assert card.parity.max_relative_error <= DEFAULT_TOLERANCE / 4
    assert card.parity.max_relative_error == pytest.approx(card.parity.max_abs_error / 2.0)
    assert card.parity.tolerance == DEFAULT_TOLERANCE

    graph = onnx.load(str(tmp_path / "sr" / "model.onnx"))
    kernel = next(t for t in graph.graph.initializer if len(t.dims) == 4 and t.dims[0] == 8)
    values = numpy_helper.to_array(kernel).copy()
    values.flat[0] += 0.01
    kernel.CopyFrom(numpy_helper.from_array(values, kernel.name))
    source = from_keras(model)
    comparison = compare_source(source, OnnxRunner(graph), probe_inputs(source, (0.0, 1.0)))
    assert comparison.max_abs_error() / 2.0 > DEFAULT_TOLERANCE


def test_cli_tolerance_default_matches_the_api() -> None:
    from export import cli
    from export.api import DEFAULT_TOLERANCE

    assert cli.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE


# 4. "-1,1" as the help writes it ----------------------------------------------------------------


@pytest.mark.parametrize("option", ["--input-range", "--output-range"])
def test_negative_range_with_a_space_is_accepted(capsys, tmp_path: Path, option: str) -> None:
    code, _, err = run(
        capsys, "convert", tmp_path / "missing.keras", "--repo", tmp_path, "--name", "x", option, "-1,1"
    )
    assert code == 2
    assert "no such file" in err and "expected one argument" not in err


def test_bad_negative_range_is_a_clear_error(capsys, tmp_path: Path) -> None:
    code, _, err = run(
        capsys,
        "convert",
        FIXTURES / "mlp_leaky.h5",
        "--repo",
        tmp_path,
        "--name",
        "x",
        "--output-range",
        "-1,-2",
    )
    assert code == 2 and "--output-range '-1,-2': HIGH must exceed LOW" in err


# 5. Everything unknown asked at once, before converting -----------------------------------------


@pytest.fixture(scope="module")
def plain_upscaler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upscaler that neither normalises its input nor bounds its output."""
    import keras
    from keras import layers

    lr = keras.Input((None, None, 3))
    x = layers.Conv2D(12, 3, padding="same")(lr)
    x = layers.UpSampling2D(2)(x)
    out = layers.Conv2D(3, 3, padding="same")(x)
    path = tmp_path_factory.mktemp("plain") / "plain_sr.keras"
    randomize(keras.Model(lr, out), 2).save(path)
    return path


def test_both_ranges_are_asked_in_one_message_before_conversion(
    capsys, tmp_path: Path, plain_upscaler: Path
) -> None:
    code, out, err = run(capsys, "convert", plain_upscaler, "--repo", tmp_path, "--name", "p")
    assert code == 2
    assert "cannot tell 2 things" in err
    assert "--output-range LOW,HIGH" in err and "--input-range LOW,HIGH" in err
    assert "Converting to ONNX" not in out  # asked before the slow step
    code, out, err = run(
        capsys,
        "convert",
        plain_upscaler,
        "--repo",
        tmp_path,
        "--name",
        "p",
        "--input-range",
        "-1,1",
        "--output-range",
        "-1,1",
    )
    assert code == 0, err
    card = json.loads((tmp_path / "p" / "model.json").read_text())
    assert card["input_range"] == {"low": -1.0, "high": 1.0} and card["output_range"] == {
        "low": -1.0,
        "high": 1.0,
    }


def test_rescaling_after_sigmoid_and_leading_rescaling_need_no_flags(tmp_path: Path) -> None:
    import keras
    from keras import layers

    from export.api import export_keras_model

    lr = keras.Input((None, None, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(lr)
    x = layers.Conv2D(12, 3, padding="same")(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Conv2D(3, 3, padding="same", activation="tanh")(x)
    out = layers.Rescaling(127.5, offset=127.5)(x)
    card = export_keras_model(randomize(keras.Model(lr, out), 4), tmp_path, "r", preview=False)
    assert (card.input_range.low, card.input_range.high) == (0.0, 255.0)  # type: ignore[union-attr]
    assert (card.output_range.low, card.output_range.high) == (0.0, 255.0)


# 6. Lambda with --unsafe that cannot be rebuilt ----------------------------------------------------


@pytest.fixture(scope="module")
def unbuildable_lambda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras 3 .keras whose Lambda calls `tf`, a name its code has no access to when loaded."""
    import keras
    import tensorflow as tf
    from keras import layers

    lr = keras.Input((None, None, 3))
    x = layers.Conv2D(12, 3, padding="same")(lr)
    x = layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2))(x)
    out = layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x)
    path = tmp_path_factory.mktemp("lambda") / "lambda_sr.keras"
    keras.Model(lr, out).save(path)
    return path


def test_unbuildable_lambda_gets_keras_advice_and_ours(
    capsys, tmp_path: Path, unbuildable_lambda: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = (
        "convert",
        unbuildable_lambda,
        "--repo",
        tmp_path,
        "--name",
        "l",
        "--unsafe",
        "--input-range",
        "0,1",
    )
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Lambda.call()" in err and "specify the `output_shape` argument" in err  # Keras's advice, whole
    assert "\x1b[" not in err
    assert "output_shape" in err and "PixelShuffle" in err and "Rescaling" in err  # and ours
    monkeypatch.setenv("GAN_EXPORT_DEBUG", "1")
    code = main([str(a) for a in argv])
    assert code == 2 and "Traceback" in capsys.readouterr().err


# 7. Checkpoints and damaged files -----------------------------------------------------------------


def test_checkpoint_without_architecture_is_explained(capsys, tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "convert", CORPUS_FILES / "tf_tutorial_ckpt", "--repo", tmp_path, "--name", "c"
    )
    assert code == 2
    assert "TensorFlow training checkpoint" in err and "generator (" in err and "discriminator (" in err
    assert "--architecture module:function" in err
    assert (
        "tf.train.Checkpoint(generator=generator).restore(" in err
        and 'generator.save("generator.keras")' in err
    )


def _damaged_savedmodel(tmp_path: Path, damage: str) -> tuple[Path, Path]:
    copy = tmp_path / "saved"
    shutil.copytree(CORPUS_FILES / "mlp_model1_savedmodel", copy)
    data = next((copy / "variables").glob("variables.data-*"))
    content = data.read_bytes()
    if damage == "truncated":
        data.write_bytes(content[: len(content) // 2])
    else:
        data.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    return copy, data


@pytest.mark.parametrize(("damage", "says"), [("truncated", "truncated"), ("lfs", "Git LFS pointer")])
def test_damaged_savedmodel_names_the_file(capsys, tmp_path: Path, damage: str, says: str) -> None:
    directory, data = _damaged_savedmodel(tmp_path, damage)
    code, _, err = run(capsys, "convert", directory, "--repo", tmp_path / "r", "--name", "s")
    assert code == 2
    assert "incomplete" in err and data.name in err and says in err
    assert "Read less bytes" not in err or data.name in err


# 8. Conditional generators ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concat_generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """keras-io's conditional GAN in small: 128 noise values + 10 one-hot classes in one input."""
    import keras
    from keras import layers

    z = keras.Input((138,))
    x = layers.Dense(7 * 7 * 8)(z)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((7, 7, 8))(x)
    x = layers.Conv2DTranspose(8, 4, strides=2, padding="same")(x)
    out = layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    path = tmp_path_factory.mktemp("concat") / "cgan.keras"
    randomize(keras.Model(z, out), 6).save(path)
    return path


def test_concatenated_condition_is_hinted_without_the_flag(
    capsys, tmp_path: Path, concat_generator: Path
) -> None:
    code, out, err = run(capsys, "convert", concat_generator, "--repo", tmp_path, "--name", "plain")
    assert code == 0, err
    assert "latent size 138 = 128 + 10" in out and "--condition onehot:10" in out
    code, out, _ = run(capsys, "inspect", tmp_path / "plain")
    assert code == 0 and "--condition onehot:10" in out


def test_concatenated_condition_with_the_flag(capsys, tmp_path: Path, concat_generator: Path) -> None:
    names = ",".join(f"digit{i}" for i in range(10))
    code, out, err = run(
        capsys,
        "convert",
        concat_generator,
        "--repo",
        tmp_path,
        "--name",
        "c",
        "--condition",
        "onehot:10",
        "--class-names",
        names,
    )
    assert code == 0, err
    assert "10 classes" in out
    card = json.loads((tmp_path / "c" / "model.json").read_text())
    assert card["latent_size"] == 128 and card["input_shape"] == [None, 138]
    assert card["condition"]["classes"] == 10 and card["condition"]["source"] == "concat"
    assert card["condition"]["class_names"][3] == "digit3"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--condition", "onehot:200"), "too few to hold 200 one-hot class values"),
        (("--condition", "softmax:10"), "expected onehot:K, onehot:K:first or index:K"),
        (
            ("--condition", "onehot:10", "--class-names", "a,b"),
            "--class-names gives 2 names but --condition says 10",
        ),
        (("--class-names", "a,b"), "--class-names applies to conditional generators"),
    ],
)
def test_condition_mistakes(
    capsys, tmp_path: Path, concat_generator: Path, flags: tuple[str, ...], says: str
) -> None:
    code, _, err = run(capsys, "convert", concat_generator, "--repo", tmp_path, "--name", "c", *flags)
    assert code == 2 and says in err


def test_two_input_savedmodel_is_conditional(tmp_path: Path) -> None:
    """A noise + integer-label generator saved as a SavedModel (no Keras on the way back in)."""
    from export.api import export_file
    from export.architectures import build

    model = randomize(build("cgan-digits", latent_size=8), 9)
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    card = export_file(tmp_path / "saved", tmp_path / "repo", "sm", preview=False)
    assert card.condition is not None and card.condition.classes == 10
    assert card.latent_size == 8 and card.input_shape == [None, 18]
    assert card.parity.max_relative_error is not None and card.parity.max_relative_error < 1e-5


def test_conditional_preview_has_one_row_per_class(tmp_path: Path) -> None:
    from PIL import Image

    from export.api import export_keras_model
    from export.architectures import build

    model = randomize(build("cgan-digits"), 8)
    card = export_keras_model(model, tmp_path, "digits", architecture="cgan-digits")
    assert card.condition is not None and card.condition.classes == 10
    assert card.condition.source == "index" and card.condition.source_input == "label"
    with Image.open(tmp_path / "digits" / "preview.png") as preview:
        tiles_high = (preview.height - 4) // (64 + 4)
    assert tiles_high == 10


# 9. The CLI answers without TensorFlow where it can, and converts without C++ log noise -----------


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["architectures"], ["convert", "x.keras", "--repo", "r", "--name", "bad name"], ["convert"]],
)
def test_cli_answers_without_importing_tensorflow(argv: list[str]) -> None:
    script = (
        "import sys\nfrom export.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TensorFlow'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_conversion_prints_no_tensorflow_log_lines(tmp_path: Path, concat_generator: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "gan-export"),
            "convert",
            str(concat_generator),
            "--repo",
            str(tmp_path),
            "--name",
            "q",
            "--no-preview",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    noise = [line for line in result.stderr.splitlines() if line.strip()]
    assert noise == [], noise
    assert np.isfinite(json.loads((tmp_path / "q" / "model.json").read_text())["parity"]["max_abs_error"])
