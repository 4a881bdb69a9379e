"""Backends of the local engine, chosen by :class:`~openopen8.engine.config.EngineConfig`.

Real backends import their heavy packages only in ``load()``, so choosing
one whose package is missing fails there with a message naming the extra.
"""

from __future__ import annotations

from ..config import EngineConfig, voice_examples
from .base import Backends, MissingDependency, ModelIntegrityError  # noqa: F401
from .fake import FakeLlm, FakeStt, FakeTts, FakeVad


def build_backends(cfg: EngineConfig) -> Backends:
    if cfg.vad == "silero":
        from .vad import SileroVad
        vad = SileroVad(cfg.cache_dir)
    elif cfg.vad == "webrtc":
        from .vad import WebrtcVad
        vad = WebrtcVad(cfg.webrtc_mode)
    else:
        vad = FakeVad()

    if cfg.stt.startswith("whisper-"):
        from .stt import WhisperStt
        stt = WhisperStt(cfg.stt[len("whisper-"):], cfg.cache_dir, cfg.stt_threads,
                         cfg.stt_model_path, cfg.stt_short_window)
    else:
        stt = FakeStt()

    if cfg.llm == "smollm2":
        from .llm_llama import LlamaLlm
        llm = LlamaLlm(cfg.cache_dir, cfg.llm_threads, cfg.llm_model_path,
                       warm_messages=[{"role": "system", "content": cfg.instructions},
                                      *voice_examples(cfg.instructions, cfg.voice_examples)])
    elif cfg.llm == "chat-completions":
        from .llm_chat import ChatCompletionsLlm
        llm = ChatCompletionsLlm(cfg.chat_base_url, cfg.chat_model, cfg.chat_api_key,
                                 cfg.chat_timeout_s)
    else:
        llm = FakeLlm()

    if cfg.tts == "piper":
        from .tts import PiperTts
        tts = PiperTts(cfg.cache_dir, cfg.tts_threads, cfg.tts_model_path)
    elif cfg.tts == "espeak":
        from .tts import EspeakTts
        tts = EspeakTts()
    else:
        tts = FakeTts()
    return Backends(vad=vad, stt=stt, llm=llm, tts=tts)
