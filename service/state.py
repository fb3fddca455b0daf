"""What the running service holds between requests: settings, models, worker pools and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from service.metrics import ServiceMetrics
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

    def with_settings(self, settings: Settings) -> ServiceState:
        """The same state seen with other settings (limits, formats) for one request."""
        return self if settings is self.settings else replace(self, settings=settings)

    async def in_encode_pool(self, function: Callable[..., T], *args: object) -> T:
        """Run image decode/encode work off the event loop, in the bounded encode pool."""
        return await asyncio.get_running_loop().run_in_executor(self.encode_pool, function, *args)
