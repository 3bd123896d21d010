"""Engine tests run the whole runtime with the in-memory store. Tests that involve time
also take ``autojump_clock``: deadlines, backoff and long polls then pass instantly."""

from collections.abc import AsyncIterator

import pytest

import emit


@pytest.fixture
async def rt() -> AsyncIterator[emit.Runtime]:
    async with emit.open_runtime(None) as runtime:
        yield runtime


@pytest.fixture
async def jobs(rt: emit.Runtime) -> emit.SpaceJobs:
    space = await rt.create_space("test")
    return rt.space(space.id)
