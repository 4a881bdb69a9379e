"""What ``openopen8 talk`` was asked to do, checked before anything connects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .audio import AudioError, AudioFormat, parse_format

DEFAULT_URL = "ws://127.0.0.1:8000"
DEFAULT_MODEL = "openopen8-local"


class UsageError(Exception):
    """Bad options: exit code 2, nothing was sent."""


@dataclass
class TalkOptions:
    url: str = DEFAULT_URL
    token: str | None = None
    model: str = DEFAULT_MODEL
    file: Path | None = None
    rate: int | None = None          # raw PCM16 input: its sample rate
    channels: int = 1                # raw PCM16 input: its channel count
    mic: bool = False
    text: str | None = None
    fast: bool = False
    manual: bool = False
    json: bool = False
    out: Path | None = None
    voice: str | None = None
    instructions: str | None = None
    dialect: str = "ga"
    fmt: AudioFormat = field(default_factory=AudioFormat)
    transcribe: str | None = "gpt-4o-mini-transcribe"
    text_only: bool = False
    tools: list[dict] = field(default_factory=list)
    tool_results: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0

    @property
    def mode(self) -> str:
        return "mic" if self.mic else "file" if self.file else "text"


def realtime_url(url: str, model: str) -> str:
    """``ws://host:port`` → ``ws://host:port/v1/realtime?model=M``.  http(s) maps to
    ws(s); a URL ending in ``/v1`` gets ``/realtime``; any other path is kept."""
    parts = urlsplit(url if "://" in url else "ws://" + url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise UsageError(f"--url must look like ws://host:port (got {url!r})")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1/realtime"
    elif path.endswith("/v1"):
        path += "/realtime"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    query.append(("model", model))
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def load_tools(path: Path) -> list[dict]:
    """A JSON list of function tools, in the Realtime shape
    ``{"type":"function","name",…}`` or the Chat Completions shape
    ``{"type":"function","function":{…}}``; returned in the Realtime shape."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read --tools {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--tools {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise UsageError(f"--tools {path} must hold a JSON list of function tools")
    tools = []
    for i, tool in enumerate(data):
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            tool = {"type": "function", **tool["function"]}
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise UsageError(f"--tools {path}: entry {i} has no function name")
        if tool.setdefault("type", "function") != "function":
            raise UsageError(f"--tools {path}: entry {i} is not a function tool")
        tool.setdefault("parameters", {"type": "object", "properties": {}})
        tools.append(tool)
    return tools


def parse_tool_results(items: list[str]) -> dict[str, str]:
    """``NAME=JSON`` pairs → {name: the JSON text, normalised}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--tool-result must be NAME=JSON (got {item!r})")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise UsageError(f"--tool-result {name}: {value!r} is not JSON "
                             '(quote a string: NAME=\'"text"\')') from None
        out[name.strip()] = json.dumps(parsed, ensure_ascii=False)
    return out


def build(*, url: str, token: str | None, model: str, file: Path | None, rate: int | None,
          channels: int, mic: bool, text: str | None, fast: bool, manual: bool, json_out: bool,
          out: Path | None, voice: str | None, instructions: str | None, dialect: str,
          audio_format: str, audio_rate: int, transcribe: str | None, text_only: bool,
          tools: Path | None, tool_results: list[str], timeout: float) -> TalkOptions:
    chosen = [name for name, on in (("--file", file is not None), ("--mic", mic),
                                    ("--text", text is not None)) if on]
    if len(chosen) != 1:
        raise UsageError("say what to send: exactly one of --file PATH, --mic or --text \"…\""
                         + (f" (got {' and '.join(chosen)})" if chosen else ""))
    dialect = dialect.lower()
    if dialect not in ("ga", "beta"):
        raise UsageError(f"--dialect must be ga or beta (got {dialect!r})")
    try:
        fmt = parse_format(audio_format, audio_rate)
    except AudioError as exc:
        raise UsageError(str(exc)) from None
    if fmt.kind == "pcm16" and not 8000 <= fmt.rate <= 48000:
        raise UsageError(f"--audio-rate {fmt.rate} is out of range (8000-48000)")
    if rate is not None and rate < 1000:
        raise UsageError(f"--rate {rate} is too low")
    if channels < 1:
        raise UsageError("--channels must be at least 1")
    if text is not None and not text.strip():
        raise UsageError("--text needs some text")
    if file is not None and not file.is_file():
        raise UsageError(f"no such file: {file}")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    opts = TalkOptions(
        url=url, token=token or None, model=model, file=file, rate=rate, channels=channels,
        mic=mic, text=text, fast=fast, manual=manual, json=json_out, out=out, voice=voice,
        instructions=instructions, dialect=dialect, fmt=fmt, transcribe=transcribe or None,
        text_only=text_only, tools=load_tools(tools) if tools else [],
        tool_results=parse_tool_results(tool_results), timeout=timeout)
    realtime_url(opts.url, opts.model)  # validates --url
    unknown = set(opts.tool_results) - {t["name"] for t in opts.tools}
    if unknown:
        raise UsageError(f"--tool-result for {', '.join(sorted(unknown))}, which --tools does not declare")
    return opts
