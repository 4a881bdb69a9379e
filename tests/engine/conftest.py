"""The engine on its real models, loaded once per test process (get_engine
caches it): the fixture the real-model modules share."""

from __future__ import annotations

import pytest

from openopen8.engine.config import EngineConfig
from openopen8.engine.runtime import get_engine


@pytest.fixture(scope="module")
def engine():
    eng = get_engine(EngineConfig())
    eng.load_sync()
    return eng
