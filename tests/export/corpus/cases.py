"""The corpus: generators and upscalers written and saved the way public Keras GAN code does it.

One row per case: how its authors write the model, how they save it, the file, the exact extra
`gan-export convert` flags, and why each flag cannot be read from the file (or why none is needed).
test_corpus.py exports every row with the CLI and serves it; `markdown_table()` renders the table
for docs/export.md ("What users write, and the command that exports it").

tf.keras 2 files are genuine (make_tfkeras2.py, committed under files/); Keras 3 files are written
at test time by make_keras3.py. Commands run in tests/export/corpus, where corpus_arch.py is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Range = tuple[float, float]
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Case:
    """One corpus model and the command that exports it."""

    name: str  # repository entry name (and test id)
    written: str  # how its authors write it
    saved: str  # how they save it
    framework: Literal["tf.keras 2", "Keras 3"]
    source: str  # tf.keras 2: path under files/; Keras 3: the file make_keras3 writes
    reference: str  # key prefix in reference_tfkeras2.npz, or make_keras3.WRITERS key
    flags: tuple[str, ...]
    why: str  # why each flag cannot be known from the file, or what the tool reads instead
    kind: Literal["generator", "upscaler"]
    output_range: Range
    image: tuple[int, int, int] | None = None  # generators: (height, width, channels)
    flat_output: bool = False
    input_range: Range | None = None  # upscalers
    scale: int | None = None
    channels: int = 3  # upscalers: input and output channels
    classes: int | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def command(self) -> str:
        """The command a user types (in the directory holding corpus_arch.py)."""
        return " ".join(["gan-export convert", self.source, "--repo models --name", self.name, *self.flags])


CASES: tuple[Case, ...] = (
    Case(
        name="keras-gan-dcgan-tfk2",
        written="Keras-GAN DCGAN: functional Model(noise, Sequential([...])(noise)) wrapping a nested "
        "Sequential (Dense → UpSampling2D+Conv+BN(0.8) ×2 → tanh), 28×28×1",
        saved="tf.keras 2 model.save_weights('g.hdf5')",
        framework="tf.keras 2",
        source="files/keras_gan_dcgan.hdf5",
        reference="keras_gan_dcgan",
        flags=("--architecture", "corpus_arch:keras_gan_dcgan"),
        why="--architecture: a weights file holds variables, not the layers that use them; the "
        "architecture exists only in the author's code",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(28, 28, 1),
    ),
    Case(
        name="keras-gan-dcgan-k3",
        written="the same nested-Sequential DCGAN, in Keras 3",
        saved="Keras 3 model.save_weights('g.weights.h5')",
        framework="Keras 3",
        source="g.weights.h5",
        reference="keras_gan_dcgan_k3",
        flags=("--architecture", "corpus_arch:keras_gan_dcgan"),
        why="--architecture: weights only, as above",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(28, 28, 1),
    ),
    Case(
        name="espcn-x3",
        written="keras-io ESPCN ×3 on the Y channel: four Conv2D (Orthogonal init), pixel shuffle as "
        "tf.nn.depth_to_space(x, 3) on a Keras tensor (a TFOpLambda layer), no output activation",
        saved="tf.keras 2 model.save('espcn_x3.h5')",
        framework="tf.keras 2",
        source="files/espcn_x3.h5",
        reference="espcn_x3",
        flags=("--input-range", "0,1", "--output-range", "0,1"),
        why="--input-range and --output-range: the graph starts with a convolution and ends without "
        "an activation; [0, 1] is the training script's data pipeline (Y / 255), not in the model",
        kind="upscaler",
        output_range=(0.0, 1.0),
        input_range=(0.0, 1.0),
        scale=3,
        channels=1,
    ),
    Case(
        name="edsr-x2",
        written="keras-io EDSR ×2: Rescaling(1/255), residual blocks without BN, tf.nn.depth_to_space "
        "(TFOpLambda), Rescaling(255), tf.clip_by_value(x, 0, 255) (TFOpLambda)",
        saved="tf.keras 2 model.save('edsr_x2.h5')",
        framework="tf.keras 2",
        source="files/edsr_x2.h5",
        reference="edsr_x2",
        flags=(),
        why="none: input [0, 255] from the leading Rescaling(1/255), output [0, 255] from the final clip",
        kind="upscaler",
        output_range=(0.0, 255.0),
        input_range=(0.0, 255.0),
        scale=2,
    ),
    Case(
        name="srgan-x4-fixed",
        written="SRGAN ×4 (Conv9+PReLU, residual block with BN, long skip, two Conv → pixel-shuffle "
        "layer → PReLU stages, Conv9 tanh) built on Input((24, 24, 3)) though fully convolutional",
        saved="Keras 3 model.save_weights('srgan_x4_24px.weights.h5')",
        framework="Keras 3",
        source="srgan_x4_24px.weights.h5",
        reference="srgan_fixed",
        flags=("--architecture", "corpus_arch:srgan_fixed", "--input-range", "-1,1"),
        why="--architecture: weights only; --input-range: the network starts with a convolution, "
        "and the [-1, 1] scaling lives in the training data loader. Output [-1, 1] from tanh",
        kind="upscaler",
        output_range=(-1.0, 1.0),
        input_range=(-1.0, 1.0),
        scale=4,
    ),
    Case(
        name="srgan-x2-tfops",
        written="SRGAN ×2 in tf.keras 2 normalising with arithmetic on Keras tensors: x / 127.5 - 1 "
        "in, (y + 1) * 127.5 after tanh (TFOpLambda layers), tf.nn.depth_to_space, "
        "PReLU(shared_axes=[1, 2])",
        saved="tf.keras 2 model.save('srgan_x2_tfops.h5')",
        framework="tf.keras 2",
        source="files/srgan_x2_tfops.h5",
        reference="srgan_x2_tfops",
        flags=(),
        why="none: input [0, 255] from x / 127.5 - 1 (which maps it onto [-1, 1]), output [0, 255] "
        "from (tanh + 1) * 127.5",
        kind="upscaler",
        output_range=(0.0, 255.0),
        input_range=(0.0, 255.0),
        scale=2,
    ),
    Case(
        name="rdn-x2",
        written="RDN ×2: Rescaling(1/255), residual dense blocks (Concatenate of all earlier features, "
        "1×1 local fusion, local skip), global 1×1+3×3 fusion and skip, Conv2DTranspose ×2, "
        "sigmoid, Rescaling(255)",
        saved="Keras 3 model.save('rdn_x2.keras')",
        framework="Keras 3",
        source="rdn_x2.keras",
        reference="rdn_x2",
        flags=(),
        why="none: input [0, 255] from the leading Rescaling(1/255), output [0, 255] from sigmoid "
        "then Rescaling(255)",
        kind="upscaler",
        output_range=(0.0, 255.0),
        input_range=(0.0, 255.0),
        scale=2,
    ),
    Case(
        name="wgan-gp-mnist",
        written="keras-io WGAN-GP generator: Dense → BN → LeakyReLU → Reshape 4×4 → three "
        "(UpSampling2D, Conv, BN, activation) blocks to 32×32, tanh, Cropping2D((2, 2)) to 28×28×1",
        saved="Keras 3 model.save('wgan_gp_generator.keras')",
        framework="Keras 3",
        source="wgan_gp_generator.keras",
        reference="wgan_gp",
        flags=(),
        why="none: output [-1, 1] from the tanh before the crop, 28×28×1 from the output shape",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(28, 28, 1),
    ),
    Case(
        name="cgan-embedding",
        written="Keras-GAN cgan: inputs noise (N, 16) and an int label (N, 1) → Embedding(10, 16) → "
        "Flatten → multiply([noise, embedding]) → nested Sequential MLP → 8×8×1 tanh",
        saved="tf.keras 2 model.save('cgan_embedding.h5')",
        framework="tf.keras 2",
        source="files/cgan_embedding.h5",
        reference="cgan_embedding",
        flags=(),
        why="none: 10 classes from the Embedding's input_dim on the integer label input",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(8, 8, 1),
        classes=10,
    ),
    Case(
        name="cgan-embedding-named",
        written="the same cgan file, served with class names",
        saved="tf.keras 2 model.save('cgan_embedding.h5')",
        framework="tf.keras 2",
        source="files/cgan_embedding.h5",
        reference="cgan_embedding",
        flags=("--class-names", ",".join(CIFAR10)),
        why="--class-names: the names live in the data set, never in the model",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(8, 8, 1),
        classes=10,
        class_names=CIFAR10,
    ),
    Case(
        name="acgan-onehot",
        written="two inputs, noise (N, 16) and a one-hot label (N, 10), Concatenate inside → Dense → "
        "BN → ReLU → Reshape → Conv2DTranspose ×2 → 16×16×3 tanh",
        saved="Keras 3 model.save('acgan_onehot.keras')",
        framework="Keras 3",
        source="acgan_onehot.keras",
        reference="acgan_onehot",
        flags=(),
        why="none: 10 classes from the width of the second (one-hot) input",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(16, 16, 3),
        classes=10,
    ),
    Case(
        name="keras-io-cgan",
        written="keras-io conditional GAN: one input of 16 noise + 10 one-hot values concatenated "
        "before the call → Dense 7·7·26 → LeakyReLU → Reshape → Conv2DTranspose ×2 → "
        "Conv2D(1, 7, sigmoid), 28×28×1",
        saved="Keras 3 model.save('conditional_gan_generator.keras')",
        framework="Keras 3",
        source="conditional_gan_generator.keras",
        reference="keras_io_conditional",
        flags=("--condition", "onehot:10"),
        why="--condition onehot:10: the model has one input of 26 values; nothing in it tells 16 noise "
        "+ 10 one-hot values from 26 noise values",
        kind="generator",
        output_range=(0.0, 1.0),
        image=(28, 28, 1),
        classes=10,
    ),
    Case(
        name="mlp-model1-savedmodel",
        written='"Model 1": Dense layers with activation=LeakyReLU(0.2) objects, '
        "BatchNormalization(momentum=0.7), Dense(8·8·3, tanh) flat output",
        saved="tf.keras 2 tf.saved_model.save(model, 'mlp_model1_savedmodel')",
        framework="tf.keras 2",
        source="files/mlp_model1_savedmodel",
        reference="mlp_model1",
        flags=(),
        why="none: 192 = 8·8·3 is the only square 1- or 3-channel image of 192 values (else "
        "--image-shape HxWxC)",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(8, 8, 3),
        flat_output=True,
    ),
    Case(
        name="tf-tutorial-ckpt",
        written="TensorFlow DCGAN tutorial: Sequential Dense 7·7·C (no bias) → BN → LeakyReLU → "
        "Reshape → Conv2DTranspose k5 s1/s2/s2 (no bias) with BN and LeakyReLU → tanh, 28×28×1",
        saved="tf.keras 2 tf.train.Checkpoint(generator=, discriminator=, generator_optimizer=, "
        "discriminator_optimizer=).save(prefix) only",
        framework="tf.keras 2",
        source="files/tf_tutorial_ckpt",
        reference="tf_tutorial",
        flags=("--architecture", "corpus_arch:tf_tutorial_generator"),
        why="--architecture: a checkpoint holds variables only (the tutorial never saves a model)",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(28, 28, 1),
    ),
    Case(
        name="tf-tutorial-ckpt-prefix",
        written="the same tutorial checkpoint, named by its prefix as tf.train.latest_checkpoint gives it",
        saved="tf.keras 2 tf.train.Checkpoint(...).save(prefix) only",
        framework="tf.keras 2",
        source="files/tf_tutorial_ckpt/ckpt-1",
        reference="tf_tutorial",
        flags=("--architecture", "corpus_arch:tf_tutorial_generator"),
        why="--architecture: as above; the prefix names no file (ckpt-1.index and ckpt-1.data-* exist)",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(28, 28, 1),
    ),
    Case(
        name="faces64-dcgan",
        written="Radford et al. face DCGAN: Dense → Reshape 4×4 → BN → ReLU → four stride-2 "
        "Conv2DTranspose k4 with BN and ReLU → tanh, 64×64×3",
        saved="tf.keras 2 model.save('faces64_dcgan.h5')",
        framework="tf.keras 2",
        source="files/faces64_dcgan.h5",
        reference="faces64_dcgan",
        flags=(),
        why="none: a full model ending in tanh",
        kind="generator",
        output_range=(-1.0, 1.0),
        image=(64, 64, 3),
    ),
)


def markdown_table() -> str:
    """The corpus as a Markdown table: what users write, how they save it, the command, why."""
    rows = [
        "| What users write | How they save it | The command | Why these flags |",
        "| --- | --- | --- | --- |",
    ]
    for case in CASES:
        rows.append(f"| {case.written} | {case.saved} | `{case.command}` | {case.why} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
