"""Errors the export tool raises: each message is written for the user and says what to do.

Hierarchy (the CLI prints the message and exits with `exit_code`, never a traceback)::

    ExportError                     exit 2 unless noted
    ├── UsageError                  bad arguments: entry name, architecture, option, shape, range
    ├── SourceError                 the source file or directory cannot be used as given
    │   ├── SourceNotFound
    │   ├── UnknownFormat
    │   ├── ArchitectureMismatch    weights do not fit the architecture (names the first layer)
    │   ├── UnsafeLayer             a Lambda layer (code) without --unsafe
    │   ├── UnsupportedLayer        a Keras layer, or a TensorFlow op tf2onnx cannot convert
    │   ├── NotAnImageModel         output is not an image (rank, channels) or input is neither
    │   ├── SeveralInputsOrOutputs
    │   └── MissingInformation      a fact the model cannot tell us (--image-shape, --output-range …)
    └── VerificationFailed          exit 1: the ONNX model does not match the source model
"""

from __future__ import annotations


class ExportError(Exception):
    """Base of every export error; `str(error)` is the user-facing message."""

    exit_code = 2


class UsageError(ExportError):
    """An argument is invalid (entry name, architecture name, option, shape or range syntax)."""


class SourceError(ExportError):
    """The source model cannot be exported as given."""


class SourceNotFound(SourceError):
    """The source path does not exist."""


class UnknownFormat(SourceError):
    """The source is not a .keras, .h5, .weights.h5 file or a SavedModel directory."""


class ArchitectureMismatch(SourceError):
    """A weights file does not fit the architecture it was paired with."""


class UnsafeLayer(SourceError):
    """The model holds a Lambda layer, i.e. code, and --unsafe was not given."""


class UnsupportedLayer(SourceError):
    """A Keras layer or a TensorFlow op that cannot be loaded or converted to ONNX."""


class NotAnImageModel(SourceError):
    """The model's output is not an image, or its input is neither a latent vector nor an image."""


class SeveralInputsOrOutputs(SourceError):
    """The model has more than one input or output; a GAN generator has one of each."""


class MissingInformation(SourceError):
    """The model does not say something the card needs; the message names the option to pass."""


class VerificationFailed(ExportError):
    """ONNX output differs from the source model's beyond the tolerance."""

    exit_code = 1
