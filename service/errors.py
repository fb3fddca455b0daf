"""The service's exceptions: one tree, turned into HTTP responses in one place (`service.app`).

Every error a client can cause is a `RequestError`; its class fixes the HTTP status and the
machine-readable `code` of the `{"error": {"code": ..., "message": ...}}` body. Messages are
written for the person who sent the request. `StartupError`s stop the service before it serves.

    ServiceError                        500 internal_error
    ├── RequestError
    │   ├── InvalidRequest              422 invalid_request
    │   │   ├── TooManyImages           422 too_many_images
    │   │   ├── InvalidLatents          422 invalid_latents
    │   │   ├── InvalidLabel            422 invalid_label
    │   │   ├── WrongModelKind          422 wrong_model_kind
    │   │   └── InvalidTiling           422 invalid_tiling (tile or overlap outside the server's bounds)
    │   ├── ModelNotFound               404 model_not_found
    │   ├── UnsupportedMediaType        415 unsupported_media_type
    │   ├── InvalidImage                400 invalid_image
    │   │   └── TruncatedImage          400 truncated_image
    │   ├── InvalidCustomAttributes     400 invalid_custom_attributes (SageMaker /invocations)
    │   ├── InvalidTensor               400 invalid_tensor (Open Inference Protocol /v2/.../infer)
    │   ├── NotAcceptable               406 not_acceptable
    │   └── PayloadTooLarge             413 payload_too_large
    │       ├── ImageTooLarge           413 image_too_large
    │       ├── OutputTooLarge          413 output_too_large
    │       ├── ResponseTooLarge        413 response_too_large (SageMaker's 6 MB payload limit)
    │       └── TooCostly               413 too_costly (more work than one request may bring)
    │           └── UpscaleTooCostly    413 upscale_too_costly
    ├── QueueFull                       503 queue_full (+ Retry-After)
    ├── DeadlineExceeded                503 deadline_exceeded (+ Retry-After; past request_timeout_s)
    ├── ClientClosedRequest             499 client_closed_request (logged; the client is gone)
    ├── NotReady                        503 not_ready
    │   └── ShuttingDown                503 shutting_down (+ Retry-After; SIGTERM received)
    │       └── BatcherClosed           503 shutting_down (the model stopped taking work)
    ├── InferenceError                  500 inference_failed
    │   └── BatchOutputMismatch         500 inference_failed
    ├── InvocationTimeout               504 invocation_timeout (past the SageMaker mode's time limit)
    └── StartupError                    (never reaches a client: the service does not start)
        ├── ModelsDirMissing
        ├── ModelLoadError
        └── ProviderUnavailable
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestError(ServiceError):
    """The request cannot be served as sent; the client can fix it."""

    status_code = 400
    code = "bad_request"


class InvalidRequest(RequestError):
    """A parameter is well-formed JSON or query but makes no sense."""

    status_code = 422
    code = "invalid_request"


class TooManyImages(InvalidRequest):
    """`n` (or the number of latents) is above the configured maximum."""

    code = "too_many_images"


class InvalidLatents(InvalidRequest):
    """An explicit latent vector has the wrong length or holds NaN or Inf."""

    code = "invalid_latents"


class InvalidLabel(InvalidRequest):
    """A class label is out of range, an unknown class name, or given to an unconditional model."""

    code = "invalid_label"


class WrongModelKind(InvalidRequest):
    """The named model exists but is an upscaler where a generator is needed, or the reverse."""

    code = "wrong_model_kind"


class InvalidTiling(InvalidRequest):
    """`tile` or `overlap` lies outside the bounds the server lets a request choose."""

    code = "invalid_tiling"


class ModelNotFound(RequestError):
    """No model of that name is loaded."""

    status_code = 404
    code = "model_not_found"


class UnsupportedMediaType(RequestError):
    """The body is not PNG, JPEG or WebP (by Content-Type or by its bytes)."""

    status_code = 415
    code = "unsupported_media_type"


class InvalidImage(RequestError):
    """The body claims to be an image but cannot be decoded."""

    status_code = 400
    code = "invalid_image"


class TruncatedImage(InvalidImage):
    """The image header is fine but its pixel data ends early."""

    code = "truncated_image"


class PayloadTooLarge(RequestError):
    """The request body is larger than `max_body_bytes`."""

    status_code = 413
    code = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    """The input image has more pixels than `max_image_pixels` (checked before decoding)."""

    code = "image_too_large"


class OutputTooLarge(PayloadTooLarge):
    """The upscaled image would have more pixels than `max_output_pixels`."""

    code = "output_too_large"


class TooCostly(PayloadTooLarge):
    """The request's work is above the server's limit, or would not finish within the request deadline."""

    code = "too_costly"


class UpscaleTooCostly(TooCostly):
    """An upscale's work (tiles x padded tile area) is above `upscale_max_work_pixels` or the deadline."""

    code = "upscale_too_costly"


class InvalidCustomAttributes(RequestError):
    """`X-Amzn-SageMaker-Custom-Attributes` is not `key=value,...` with known keys and valid values."""

    status_code = 400
    code = "invalid_custom_attributes"


class InvalidTensor(RequestError):
    """An inference request's tensors do not fit the protocol or the model's metadata."""

    status_code = 400
    code = "invalid_tensor"


class NotAcceptable(RequestError):
    """`Accept` names no output the service can produce."""

    status_code = 406
    code = "not_acceptable"


class ResponseTooLarge(PayloadTooLarge):
    """The encoded response exceeds SageMaker's real-time payload limit."""

    code = "response_too_large"


class NotReady(ServiceError):
    """Models are still loading or the service is shutting down."""

    status_code = 503
    code = "not_ready"


class InferenceError(ServiceError):
    """A model run failed or returned something its card does not allow."""

    status_code = 500
    code = "inference_failed"


class InvocationTimeout(ServiceError):
    """A SageMaker /invocations ran past its mode's time limit: SageMaker has stopped waiting for it."""

    status_code = 504
    code = "invocation_timeout"


class StartupError(ServiceError):
    """The service cannot start with this configuration or model repository."""


class ModelsDirMissing(StartupError):
    """The models directory does not exist or holds no model entry."""


class ModelLoadError(StartupError):
    """A repository entry is broken: bad name, bad card, missing or invalid ONNX file."""


class ProviderUnavailable(StartupError):
    """`device=cuda` was asked for but a session did not get the CUDA execution provider."""


class QueueFull(ServiceError):
    """Too many requests are waiting for the model: try again after `retry_after` seconds."""

    status_code = 503
    code = "queue_full"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(NotReady):
    """The service got its stop signal: new requests, and those still running at the drain bound."""

    code = "shutting_down"
    #: Seconds: another replica, or this one restarted, can take the request by then.
    retry_after = 5


class BatcherClosed(ShuttingDown):
    """The service is shutting down and stopped taking work before the request ran."""


class DeadlineExceeded(ServiceError):
    """The request ran past `request_timeout_s`; its queued work was dropped: retry after `retry_after`."""

    status_code = 503
    code = "deadline_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientClosedRequest(ServiceError):
    """The client disconnected before the answer was ready; its queued work was dropped (nginx's 499)."""

    status_code = 499
    code = "client_closed_request"


class BatchOutputMismatch(InferenceError):
    """The model returned a different number of rows than it was given."""
