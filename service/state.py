"""What the running service holds between requests: settings, models, worker pools and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeVar

from service.encode import GenerateFormat
from service.inference import InferenceCore
from service.metrics import ServiceMetrics
from service.ready_images import ReadyImages
from service.rendering import Envelope, Rendering, ResponseLimit
from service.repository import ModelRepository
from service.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceState:
    """Shared, read-only after startup; each request may see its own `settings` (tests override them)."""

    settings: Settings
    repository: ModelRepository
    metrics: ServiceMetrics
    inference_pool: ThreadPoolExecutor
    encode_pool: ThreadPoolExecutor
    #: Each generator's images made ahead of demand, by model name (`service.ready_images`).
    ready: Mapping[str, ReadyImages] = field(default_factory=dict)

    def with_settings(self, settings: Settings) -> ServiceState:
        """The same state seen with other settings (limits, formats) for one request."""
        return self if settings is self.settings else replace(self, settings=settings)

    @cached_property
    def core(self) -> InferenceCore:
        """The inference core over this state's models, limits and pools."""
        return InferenceCore(self.settings, self.repository, self.metrics, self.encode_pool, self.ready)

    def rendering(
        self, image_format: GenerateFormat, envelope: Envelope = "auto", limit: ResponseLimit | None = None
    ) -> Rendering:
        """How to render a result in `image_format`, with this state's encoder settings."""
        return Rendering(
            format=image_format,
            envelope=envelope,
            png_compress_level=self.settings.png_compress_level,
            quality=self.settings.jpeg_quality,
            limit=limit,
        )

    async def in_encode_pool(self, function: Callable[..., T], *args: object) -> T:
        """Run image decode/encode work off the event loop, in the bounded encode pool."""
        return await asyncio.get_running_loop().run_in_executor(self.encode_pool, function, *args)
