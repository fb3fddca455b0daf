"""Per-request facts for the access log and the request metrics, carried in the request scope.

`RequestContextMiddleware` puts a fresh `RequestFacts` into the ASGI scope's `state` before routing;
a route records what it learned (the model it served) through the `FactsDep` dependency; the
middleware reads it back when the response is done. Response headers are for clients, not for this.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

#: Key of the facts in the scope's `state` (what `request.state` reads).
SCOPE_KEY = "facts"


@dataclass
class RequestFacts:
    """What one request turned out to be about."""

    model: str | None = None


def install_facts(scope: MutableMapping[str, Any]) -> RequestFacts:
    """A fresh `RequestFacts` in `scope`'s state, where `request.state.facts` finds it."""
    facts = RequestFacts()
    scope.setdefault("state", {})[SCOPE_KEY] = facts
    return facts
