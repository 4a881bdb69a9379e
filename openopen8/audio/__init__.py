"""Audio helpers: formats, G.711 codecs, base64, streaming resampling."""

from .convert import StreamConverter, b64decode, b64encode, convert_once
from .formats import (OPENAI_FORMATS, PCM24, PCMA, PCMU, SUPPORTED_PCM_RATES, Fmt, FormatError,
                      parse_ga_format, parse_rate_hint)
from .resample import StreamResampler

__all__ = ["Fmt", "FormatError", "OPENAI_FORMATS", "PCM24", "PCMA", "PCMU", "StreamConverter",
           "StreamResampler", "SUPPORTED_PCM_RATES", "b64decode", "b64encode", "convert_once",
           "parse_ga_format", "parse_rate_hint"]
