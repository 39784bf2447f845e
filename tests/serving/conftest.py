"""Serving fixtures: a stand-in policy server on a free loopback port, with and without a token."""

from __future__ import annotations

from typing import Iterator

import pytest

from sigma_vla.serving.server import ServerThread
from sigma_vla.serving.standin import standin_factory
from tests.serving.helpers import IMAGE_SIZE, TOKEN, RawConnection, server_config


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A stand-in policy server (SO-101 shaped, 64 px) on a free port, no token."""
    with ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config()) as srv:
        yield srv


@pytest.fixture
def token_server() -> Iterator[ServerThread]:
    with ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config(token=TOKEN)) as srv:
        yield srv


@pytest.fixture
def raw(server: ServerThread) -> Iterator[RawConnection]:
    conn = RawConnection(server.port)
    yield conn
    conn.close()
