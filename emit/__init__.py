"""emit: a self-hostable job queue server speaking the emit.run API, on Trio.

The embedding API (see docs/embedding.md)::

    async with emit.open_runtime("emit-data") as rt:
        space = await rt.create_space("email-jobs")
        jobs = rt.space(space.id)
"""

from .domain.model import EventType, JobStatus
from .errors import (
    Conflict,
    EmitError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .runtime import NewToken, Runtime, SpaceJobs, open_runtime
from .views import Delivery, ItemResult, JobView

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "Delivery",
    "EmitError",
    "EventType",
    "Forbidden",
    "InvalidRequest",
    "ItemResult",
    "JobStatus",
    "JobView",
    "NewToken",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Runtime",
    "SpaceJobs",
    "Unauthorized",
    "Unavailable",
    "open_runtime",
]
