"""The local voice engine: an offline Realtime model (VAD → STT → LLM → TTS)
speaking the GA protocol as an in-process endpoint.  See README.md here."""

from .config import MODEL_NAME, EngineConfig
from .runtime import LocalEngine, get_engine

__all__ = ["MODEL_NAME", "EngineConfig", "LocalEngine", "get_engine"]
