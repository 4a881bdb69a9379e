"""Usage in ``response.done``, in OpenAI's detail shape.

The rule (documented in the engine README):

* text tokens come from the LLM's own tokenizer (llama.cpp for SmolLM2; the
  server's reported counts for a chat-completions backend, else a
  4-characters-per-token estimate);
* audio is counted by duration like OpenAI's realtime models: input audio
  1 token per 100 ms, output audio 1 token per 50 ms (rounded up);
* audio items in the context are fed to the LLM as their transcripts; those
  transcript tokens are counted as *audio* tokens (by duration), not text,
  so a spoken turn is not billed twice;
* the local engine has no prompt cache pricing: cached tokens are 0.
"""

from __future__ import annotations

import math
from typing import Any

INPUT_AUDIO_MS_PER_TOKEN = 100.0
OUTPUT_AUDIO_MS_PER_TOKEN = 50.0


def audio_tokens(ms: float, ms_per_token: float) -> int:
    return int(math.ceil(ms / ms_per_token - 1e-9)) if ms > 0 else 0


def usage(prompt_tokens: int, transcript_tokens: int, audio_ms_in: float,
          completion_tokens: int, audio_ms_out: float) -> dict[str, Any]:
    in_text = max(0, prompt_tokens - transcript_tokens)
    in_audio = audio_tokens(audio_ms_in, INPUT_AUDIO_MS_PER_TOKEN)
    out_text = completion_tokens
    out_audio = audio_tokens(audio_ms_out, OUTPUT_AUDIO_MS_PER_TOKEN)
    inp, out = in_text + in_audio, out_text + out_audio
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {
            "text_tokens": in_text, "audio_tokens": in_audio, "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }
