"""`gan-export` as a user runs it: the walk from a .keras file, packaging, and every bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from export import api, convert
from export.cli import main
from tests.export.conftest import FIXTURES

pytestmark = pytest.mark.xdist_group("export")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())  # rich wraps: compare on one line


def test_help_walks_from_keras_file_to_entry() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "gan-export"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "gan-export convert generator.keras --repo models --name faces" in result.stdout
    assert "gan-export package models -o model.tar.gz" in result.stdout
    assert "exit codes" in result.stdout


def test_convert_inspect_package(capsys, tmp_path: Path, small_keras_file: Path) -> None:
    repo = tmp_path / "models"
    code, out, err = run(capsys, "convert", small_keras_file, "--repo", repo, "--name", "faces")
    assert code == 0, err
    assert "max abs error" in out and str(repo / "faces") in out
    assert {p.name for p in (repo / "faces").iterdir()} == {"model.onnx", "model.json", "preview.png"}

    code, out, _ = run(capsys, "inspect", repo / "faces")
    assert code == 0 and json.loads(out)["name"] == "faces"
    code, out, _ = run(capsys, "inspect", repo / "faces" / "model.onnx")
    assert code == 0 and json.loads(out)["input_name"] == "z"

    archive = tmp_path / "model.tar.gz"
    code, out, _ = run(capsys, "package", repo, "-o", archive)
    assert code == 0 and "1 entries" in out
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert names == {"faces/model.onnx", "faces/model.json", "faces/preview.png"}


def test_version_given_or_derived_from_the_graph(capsys, tmp_path: Path, small_keras_file: Path) -> None:
    repo = tmp_path / "models"
    code, out, err = run(
        capsys, "convert", small_keras_file, "--repo", repo, "--name", "given", "--version", "7"
    )
    assert code == 0, err
    assert "version 7" in out
    assert json.loads((repo / "given" / "model.json").read_text())["version"] == "7"
    code, _, err = run(
        capsys, "convert", small_keras_file, "--repo", repo, "--name", "derived", "--no-preview"
    )
    assert code == 0, err
    version = json.loads((repo / "derived" / "model.json").read_text())["version"]
    assert len(version) == 12 and int(version, 16) >= 0
    code, _, err = run(
        capsys, "convert", small_keras_file, "--repo", repo, "--name", "bad", "--version", "a/b"
    )
    assert code != 0 and "invalid version 'a/b'" in err


def test_version_flag(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("gan-export ")


def test_package_refuses_what_gan_serve_would_refuse(capsys, tmp_path: Path, small_keras_file: Path) -> None:
    repo = tmp_path / "models"
    code, _, err = run(capsys, "convert", small_keras_file, "--repo", repo, "--name", "faces", "--no-preview")
    assert code == 0, err
    (repo / "notes").mkdir()  # a folder without a card: gan-serve refuses to start on it
    code, _, err = run(capsys, "package", repo, "-o", tmp_path / "model.tar.gz")
    assert code != 0
    assert "model entry notes" in err and "gan-serve would refuse to start on it" in err
    assert not (tmp_path / "model.tar.gz").exists()


def test_package_layout_matches_opt_ml_model(tmp_path: Path, small_keras_file: Path) -> None:
    from export.api import export_file
    from export.package import package_repository

    repo = tmp_path / "repo"
    for name in ("a", "b"):
        export_file(small_keras_file, repo, name, preview=False)
    out = package_repository(repo, tmp_path / "out" / "model.tar.gz")
    unpacked = tmp_path / "opt_ml_model"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
    assert sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()) == [
        "a/model.json",
        "a/model.onnx",
        "b/model.json",
        "b/model.onnx",
    ]


def test_architectures_lists_builtins(capsys) -> None:
    code, out, _ = run(capsys, "architectures")
    assert code == 0
    for name in ("mlp-cifar10", "dcgan-cifar10", "dcgan-mnist", "dcgan-faces64", "srgan-x4"):
        assert name in out
    assert "blocks=16" in out


# --- bad inputs: message and exit code ---------------------------------------------------------


@pytest.fixture(scope="session")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Models that are wrong in one way each, saved as .keras (plus a SavedModel with an unsupported op)."""
    import keras
    import tensorflow as tf
    from keras import layers

    root = tmp_path_factory.mktemp("bad")
    paths: dict[str, Path] = {}

    def save(name: str, inputs, outputs) -> None:
        paths[name] = root / f"{name}.keras"
        keras.Model(inputs, outputs).save(paths[name])

    z = keras.Input((8,))
    save("five_channels", z, layers.Reshape((4, 4, 5))(layers.Dense(80, activation="tanh")(z)))
    z = keras.Input((8,))
    save("rank3", z, layers.Reshape((4, 12))(layers.Dense(48, activation="tanh")(z)))
    a, b = keras.Input((8,)), keras.Input((8,))
    save("two_inputs", [a, b], layers.Reshape((4, 4, 1))(layers.Dense(16)(layers.Concatenate()([a, b]))))
    z = keras.Input((8,))
    save("linear", z, layers.Reshape((4, 4, 3))(layers.Dense(48)(z)))
    z = keras.Input((8,))
    save("flat1000", z, layers.Dense(1000, activation="tanh")(z))
    lr = keras.Input((8, 8, 3))
    dense = layers.Reshape((8, 8, 3))(layers.Dense(192)(layers.Flatten()(lr)))
    save("fixed_size_upscaler", lr, layers.Conv2D(3, 3, padding="same", activation="sigmoid")(dense))

    # A layer class nobody registered: rewrite a saved model's config as if it used one.
    unknown = root / "unknown_layer.keras"
    with zipfile.ZipFile(paths["linear"]) as src, zipfile.ZipFile(unknown, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                config = json.loads(data)
                layer = config["config"]["layers"][1]
                layer["class_name"], layer["module"], layer["registered_name"] = "FancyDense", "mylib", None
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    paths["unknown_layer"] = unknown

    class Lgamma(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
        def __call__(self, z):
            return tf.reshape(tf.tanh(tf.math.lgamma(z)), (-1, 2, 2, 1))

    module = Lgamma()
    paths["unsupported_op"] = root / "lgamma_savedmodel"
    tf.saved_model.save(
        module, str(paths["unsupported_op"]), signatures=module.__call__.get_concrete_function()
    )

    class FixedBatch(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
        def __call__(self, z):
            return tf.reshape(tf.tanh(z), (-1, 2, 2, 1))

    module = FixedBatch()
    paths["fixed_batch"] = root / "fixed_batch_savedmodel"
    tf.saved_model.save(module, str(paths["fixed_batch"]), signatures=module.__call__.get_concrete_function())

    paths["text"] = root / "notes.txt"
    paths["text"].write_text("not a model")
    paths["empty_dir"] = root / "empty_dir"
    paths["empty_dir"].mkdir()
    return paths


def _convert(capsys, tmp_path: Path, source: Path, *extra: str) -> tuple[int, str]:
    code, out, err = run(capsys, "convert", source, "--repo", tmp_path / "repo", "--name", "m", *extra)
    assert "Traceback" not in out + err
    assert not (tmp_path / "repo" / "m").exists() or code == 0
    return code, err


def test_file_not_found(capsys, tmp_path: Path) -> None:
    code, err = _convert(capsys, tmp_path, tmp_path / "missing.keras")
    assert code == 2 and "missing.keras: no such file or directory" in err


@pytest.mark.parametrize("which", ["text", "empty_dir"])
def test_unknown_format(capsys, tmp_path: Path, bad_models, which: str) -> None:
    code, err = _convert(capsys, tmp_path, bad_models[which])
    assert code == 2 and "accepted: a .keras file" in err


def test_architecture_mismatch_names_first_layer(capsys, tmp_path: Path) -> None:
    code, err = _convert(
        capsys,
        tmp_path,
        FIXTURES / "faces64_latent8_ngf4.h5",
        "--architecture",
        "dcgan-faces64",
        "--option",
        "ngf=4",
    )
    assert code == 2
    assert "does not fit --architecture dcgan-faces64" in err
    assert "layer #1 with weights" in err
    assert "has shape (4, 4, 32, 100)" in err and "has (4, 4, 32, 8)" in err


def test_weights_without_architecture(capsys, tmp_path: Path) -> None:
    code, err = _convert(capsys, tmp_path, FIXTURES / "faces64_latent8_ngf4.h5")
    assert code == 2 and "holds weights only: pass --architecture" in err


def test_unknown_architecture(capsys, tmp_path: Path) -> None:
    code, err = _convert(capsys, tmp_path, FIXTURES / "faces64_latent8_ngf4.h5", "--architecture", "stylegan")
    assert code == 2 and "unknown architecture 'stylegan'" in err and "dcgan-faces64" in err


def test_unsupported_layer_is_named(capsys, tmp_path: Path, bad_models) -> None:
    code, err = _convert(capsys, tmp_path, bad_models["unknown_layer"])
    assert code == 2 and "'FancyDense'" in err


def test_unsupported_op_is_named(capsys, tmp_path: Path, bad_models) -> None:
    code, err = _convert(capsys, tmp_path, bad_models["unsupported_op"])
    assert code == 2 and "Lgamma" in err and "cannot express" in err


def test_savedmodel_with_fixed_batch(capsys, tmp_path: Path, bad_models) -> None:
    code, err = _convert(capsys, tmp_path, bad_models["fixed_batch"])
    assert code == 2 and "fixes the input's batch" in err and "tf.TensorSpec((None, 4), tf.float32)" in err


def test_lambda_needs_unsafe(capsys, tmp_path: Path) -> None:
    code, err = _convert(capsys, tmp_path, FIXTURES / "lambda_upscaler.h5", "--input-range", "0,1")
    assert code == 2 and "Lambda layer(s) 'pixel_shuffle'" in err and "--unsafe" in err
    code, err = _convert(
        capsys, tmp_path, FIXTURES / "lambda_upscaler.h5", "--input-range", "0,1", "--unsafe"
    )
    assert code == 0, err


def test_parity_failure_reports_figures(capsys, tmp_path: Path, small_keras_file: Path) -> None:
    code, err = _convert(capsys, tmp_path, small_keras_file, "--tolerance", "1e-12")
    assert code == 1
    assert "does not match the source model: max abs error" in err and "tolerance 1e-12" in err
    assert "input 7x8" in err


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("five_channels", "its last axis (5) is not an image channel count"),
        ("rank3", "(rank 3): expected an image"),
    ],
)
def test_output_not_an_image(capsys, tmp_path: Path, bad_models, which: str, message: str) -> None:
    code, err = _convert(capsys, tmp_path, bad_models[which])
    assert code == 2 and message in err


def test_upscaler_that_only_takes_one_size(capsys, tmp_path: Path, bad_models) -> None:
    code, err = _convert(capsys, tmp_path, bad_models["fixed_size_upscaler"], "--input-range", "0,1")
    assert code == 2 and "only works at its input size [None, 8, 8, 3]" in err


def test_several_inputs(capsys, tmp_path: Path, bad_models) -> None:
    """Two float vectors of one size: not a recognisable noise + label pair, and it says why."""
    code, err = _convert(capsys, tmp_path, bad_models["two_inputs"])
    assert code == 2 and "two inputs" in err and "which is the class label" in err


def test_invalid_entry_name(capsys, tmp_path: Path, small_keras_file: Path) -> None:
    code, _, err = run(capsys, "convert", small_keras_file, "--repo", tmp_path, "--name", "../escape")
    assert code == 2 and "invalid entry name '../escape'" in err


def test_output_range_needed(capsys, tmp_path: Path, bad_models) -> None:
    code, err = _convert(capsys, tmp_path, bad_models["linear"])
    assert code == 2 and "--output-range" in err
    code, err = _convert(capsys, tmp_path, bad_models["linear"], "--output-range", "0,255")
    assert code == 0, err
    assert json.loads((tmp_path / "repo" / "m" / "model.json").read_text())["output_range"]["high"] == 255


def test_flat_output_needs_image_shape(capsys, tmp_path: Path, bad_models) -> None:
    code, err = _convert(capsys, tmp_path, bad_models["flat1000"])
    assert code == 2 and "1000 values per image" in err and "--image-shape" in err
    code, err = _convert(capsys, tmp_path, bad_models["flat1000"], "--image-shape", "10x25x4")
    assert code == 0, err
    card = json.loads((tmp_path / "repo" / "m" / "model.json").read_text())
    assert (card["height"], card["width"], card["channels"], card["flat_output"]) == (10, 25, 4, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-shape", "32x32"], "expected HxWxC"),
        (["--output-range", "1,0"], "HIGH must exceed LOW"),
        (["--option", "blocks"], "expected KEY=INTEGER"),
    ],
)
def test_bad_option_syntax(
    capsys, tmp_path: Path, small_keras_file: Path, argv: list[str], message: str
) -> None:
    code, err = _convert(capsys, tmp_path, small_keras_file, *argv)
    assert code == 2 and message in err


def test_no_verify_skips_comparison(capsys, tmp_path: Path, small_keras_file: Path) -> None:
    code, err = _convert(capsys, tmp_path, small_keras_file, "--no-verify")
    assert code == 0, err
    card = json.loads((tmp_path / "repo" / "m" / "model.json").read_text())
    assert card["parity"]["cases"] == [] and card["parity"]["max_abs_error"] is None
    assert not (tmp_path / "repo" / "m" / "preview.png").exists()
    assert np.isfinite(card["parity"]["tolerance"])


def _with_extra_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fault tf2onnx sometimes makes (a lost final Squeeze): the output with one more axis."""
    wrong = copy.deepcopy(model)
    output = wrong.graph.output[0]
    for node in wrong.graph.node:
        node.output[:] = [f"{o}_before" if o == output.name else o for o in node.output]
    wrong.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "extra_axis"))
    wrong.graph.node.append(
        helper.make_node("Unsqueeze", [f"{output.name}_before", "extra_axis"], [output.name])
    )
    output.type.tensor_type.ClearField("shape")
    return wrong


@pytest.mark.parametrize("faulty", [1, 3])
def test_a_conversion_with_the_wrong_output_shape_is_redone(
    capsys, tmp_path: Path, small_keras_file: Path, monkeypatch: pytest.MonkeyPatch, faulty: int
) -> None:
    calls: list[int] = []

    def flaky_to_onnx(traced: Any) -> onnx.ModelProto:
        calls.append(1)
        model = convert.to_onnx(traced)
        return _with_extra_axis(model) if len(calls) <= faulty else model

    monkeypatch.setattr(api, "to_onnx", flaky_to_onnx)
    code, _, err = run(capsys, "convert", small_keras_file, "--repo", tmp_path, "--name", "g")
    if faulty == 1:  # redone: the entry is written from a good graph
        assert code == 0, err
        assert len(calls) == faulty + 1
        session = ort.InferenceSession(str(tmp_path / "g" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert session.run(None, {"z": np.zeros((2, 8), np.float32)})[0].shape == (2, 16, 16, 3)
    else:  # never right: a clear error, nothing written
        assert code != 0 and "in 3 conversions" in err and "Traceback" not in err
        assert not (tmp_path / "g").exists()
