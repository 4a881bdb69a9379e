"""README's examples run as written on the Quick start setup.

Every ```python block is run, as its own process, against a gateway served
with the real local engine and nothing configured (the Quick start's
default).  A user changes nothing in a block: it reads the token from
``OPENOPEN8_TOKEN`` (README says how to set it) and talks to the Quick start
address, ``127.0.0.1:8000``, which this test replaces by its gateway's
address -- the only change.  Every ```toml block must load as settings,
with keys the settings know (an unknown key would be ignored silently) and
prices the gateway accepts."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from openopen8.billing import PriceTable
from openopen8.engine.config import EngineConfig
from openopen8.engine.runtime import get_engine
from openopen8.settings import Settings, load_settings
from tests.conftest import start_gateway

README = Path(__file__).resolve().parent.parent / "README.md"
QUICK_START_ADDRESS = "127.0.0.1:8000"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.S | re.M)


PYTHON = blocks("python")
TOML = blocks("toml")


def test_readme_has_examples_to_check():
    assert PYTHON and TOML


@pytest.fixture(scope="module")
def loaded():
    """The real models, loaded once (the gateways below share them)."""
    get_engine(EngineConfig()).load_sync()


@pytest.mark.slow
@pytest.mark.parametrize("n", range(len(PYTHON)))
async def test_python_example_runs_as_written(n, tmp_path, loaded):
    code = PYTHON[n]
    assert QUICK_START_ADDRESS in code, "an example talks to the Quick start address"
    gw = await start_gateway(tmp_path, local_engine=True)
    try:
        env = {**os.environ, "OPENOPEN8_TOKEN": await gw.token("readme")}
        for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_WEBSOCKET_BASE_URL"):
            env.pop(var, None)
        script = tmp_path / "example.py"
        script.write_text(code.replace(QUICK_START_ADDRESS, gw.http.split("://", 1)[1]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 180)
    finally:
        await gw.stop()
    report = f"README python block {n}:\n{code}\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
    assert proc.returncode == 0, report
    assert out.strip() and "error" not in out.decode().lower(), report
    if "models.list()" in code:
        assert "openopen8-local" in out.decode(), report


@pytest.mark.parametrize("n", range(len(TOML)))
def test_toml_example_loads_as_settings(n, tmp_path):
    path = tmp_path / "openopen8.toml"
    path.write_text(TOML[n])
    settings = load_settings(path, data_dir=tmp_path)
    data = tomllib.loads(TOML[n])
    unknown = set(data) - set(Settings.model_fields)
    assert not unknown, f"README toml block {n}: keys the settings do not know: {unknown}"
    engine_keys = {f.name for f in fields(EngineConfig)}
    assert not set(data.get("local", {})) - engine_keys, data["local"]
    EngineConfig.from_mapping(settings.local)
    PriceTable(settings.prices, settings.fallback_price)       # what `serve` checks at start
    for model, classes in data.get("prices", {}).items():
        assert settings.prices[model] == classes
