"""FastAPI dependencies as `Annotated` aliases: settings and the running service's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.errors import NotReady
from service.facts import SCOPE_KEY, RequestFacts
from service.settings import Settings
from service.state import ServiceState


# Both dependencies are `async def` only so FastAPI calls them on the event loop: a plain `def`
# dependency costs a worker-thread round trip on every request.
async def get_settings(request: Request) -> Settings:
    """The app's settings; tests replace this with `app.dependency_overrides[get_settings]`."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_state(request: Request, settings: SettingsDep) -> ServiceState:
    """The loaded service, or 503 while models are loading or the service is stopping."""
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None or not getattr(request.app.state, "ready", False):
        raise NotReady("the service is not ready: models are loading or it is shutting down")
    return state.with_settings(settings)


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_facts(request: Request) -> RequestFacts:
    """This request's facts for the access log and metrics (set up by the request middleware)."""
    facts = getattr(request.state, SCOPE_KEY, None)
    if not isinstance(facts, RequestFacts):
        facts = RequestFacts()
        setattr(request.state, SCOPE_KEY, facts)
    return facts


FactsDep = Annotated[RequestFacts, Depends(get_facts)]
AcceptHeader = Annotated[
    str | None,
    Header(description="`application/json` for base64 images in JSON; anything else gets binary"),
]
