"""LLM through any OpenAI-compatible ``/chat/completions`` endpoint (Ollama,
vLLM, llama.cpp server, LM Studio, OpenAI itself), streamed with aiohttp.

Tools are passed through in chat-completions shape and streamed tool calls
are reassembled, so function calling works as well as the model behind the
URL does.  Token counts come from the server's ``usage`` (requested with
``stream_options.include_usage``); a server that sends none gets the
documented estimate of 4 characters per token.  The API key is sent as a
Bearer header and never logged.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from .base import LlmChunk, LlmRequest, LlmStats, Loadable, MissingDependency, ToolCall


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t["name"],
                                              "description": t.get("description") or "",
                                              "parameters": t.get("parameters") or
                                              {"type": "object", "properties": {}}}}
            for t in tools]


def chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


class ChatStream:
    def __init__(self, backend: "ChatCompletionsLlm", req: LlmRequest) -> None:
        self.stats = LlmStats()
        self._b = backend
        self._req = req
        self._gen: AsyncIterator[LlmChunk] | None = None

    def __aiter__(self) -> AsyncIterator[LlmChunk]:
        self._gen = self._run()
        return self._gen

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()   # type: ignore[attr-defined]

    async def _run(self) -> AsyncIterator[LlmChunk]:
        import aiohttp
        b, req = self._b, self._req
        body: dict[str, Any] = {"model": b.model, "messages": req.messages, "stream": True,
                                "max_tokens": req.max_tokens, "temperature": req.temperature,
                                "stream_options": {"include_usage": True}}
        if req.tools and req.tool_choice != "none":
            body["tools"] = chat_tools(req.tools)
            body["tool_choice"] = chat_tool_choice(req.tool_choice)
        headers = {"Content-Type": "application/json"}
        if b.api_key:
            headers["Authorization"] = f"Bearer {b.api_key}"
        calls: dict[int, dict[str, str]] = {}
        text_parts: list[str] = []
        finish = "stop"
        timeout = aiohttp.ClientTimeout(total=b.timeout_s, sock_read=b.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(b.base_url.rstrip("/") + "/chat/completions", json=body,
                                 headers=headers) as r:
                if r.status != 200:
                    detail = (await r.text())[:200]
                    raise RuntimeError(f"chat completions backend answered HTTP {r.status}: "
                                       f"{detail}")
                async for raw in r.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue
                    usage = chunk.get("usage")
                    if isinstance(usage, dict):
                        self.stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                        self.stats.completion_tokens = int(usage.get("completion_tokens") or 0)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        content = delta.get("content")
                        if content:
                            text_parts.append(content)
                            yield LlmChunk(text=content)
                        for tc in delta.get("tool_calls") or []:
                            slot = calls.setdefault(int(tc.get("index", 0)),
                                                    {"id": "", "name": "", "arguments": ""})
                            slot["id"] = tc.get("id") or slot["id"]
                            fn = tc.get("function") or {}
                            slot["name"] += fn.get("name") or ""
                            slot["arguments"] += fn.get("arguments") or ""
        for idx in sorted(calls):
            c = calls[idx]
            yield LlmChunk(tool_call=ToolCall(c["name"], c["arguments"] or "{}",
                                              c["id"] or None))
        if not self.stats.prompt_tokens:
            self.stats.prompt_tokens = sum(estimate_tokens(str(m.get("content") or ""))
                                           for m in req.messages)
        if not self.stats.completion_tokens:
            self.stats.completion_tokens = estimate_tokens("".join(text_parts))
        self.stats.finish_reason = {"length": "length", "tool_calls": "tool_calls"}.get(
            finish, "stop")


class ChatCompletionsLlm(Loadable):
    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout_s: float = 60.0) -> None:
        super().__init__()
        self.base_url = base_url
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.name = f"chat-completions:{model}"

    def __repr__(self) -> str:   # never show the key
        return f"ChatCompletionsLlm({self.base_url!r}, {self.model!r})"

    def _load(self) -> None:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise MissingDependency("aiohttp", "LLM (chat completions)") from None

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def stream(self, req: LlmRequest) -> ChatStream:
        return ChatStream(self, req)

