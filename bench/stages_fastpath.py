"""What the dialect and audio stages cost per event, measured in one run.

    PYTHONPATH=. python bench/stages_fastpath.py

Prints ns/event for the relay's chain call with no stages and with
[DialectStage(client), AudioStage(), DialectStage(upstream)], for GA and
beta clients, on the hot events (audio appends and deltas).  The events are
built from wire text each time, as the relay does, and that cost is measured
separately so the ratios mean something.
"""

from __future__ import annotations

import base64
import time

import numpy as np

from openopen8.events import Event
from openopen8.relay.stage import Chain, Session
from openopen8.stages.audio import AudioStage
from openopen8.stages.dialect import DialectStage

N = 20000
AUDIO = base64.b64encode(np.zeros(2400, "<i2").tobytes()).decode()   # 50 ms at 24 kHz
APPEND = '{"type":"input_audio_buffer.append","audio":"%s"}' % AUDIO
DELTA = ('{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1",'
         '"item_id":"item_1","output_index":0,"content_index":0,"delta":"%s"}' % AUDIO)


def per_event(fn, raw: str, n: int = N) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn(Event(raw=raw))
    return (time.perf_counter() - t) / n * 1e9


def main() -> None:
    full = [DialectStage("client"), AudioStage(), DialectStage("upstream")]
    base = per_event(lambda e: None, APPEND)
    print(f"Event(raw) construction alone: {base:.0f} ns/event (subtracted below)")
    print(f"{'case':42} {'no stages':>10} {'3 stages':>10} {'extra':>8}  ns/event")
    for label, dialect, facts in (("GA client", "ga", {}),
                                  ("beta client", "beta", {"dialect_source": "header"})):
        for kind, raw, side in (("append", APPEND, "client"), ("delta", DELTA, "server")):
            res = []
            for stages in ([], full):
                chain = Chain(stages)
                s = Session(id="b", model="m", client_dialect=dialect)
                s.facts.update(facts)
                chain.open(s)
                fn = getattr(chain, side)
                res.append(min(per_event(lambda e: fn(e, s), raw) for _ in range(3)) - base)
            print(f"{label + ' ' + kind:42} {res[0]:10.0f} {res[1]:10.0f} {res[1] - res[0]:8.0f}")
    # for scale: what parsing and re-serialising the same delta would cost
    import orjson
    t = time.perf_counter()
    for _ in range(N):
        orjson.dumps(orjson.loads(DELTA))
    print(f"{'(parse + serialise one 50 ms delta)':42} {(time.perf_counter() - t) / N * 1e9:10.0f}")
    # conversion work
    chain = Chain(full)
    s = Session(id="b", model="m")
    s.facts["input_rate"] = 16000
    s.facts["output_rate"] = 16000
    chain.open(s)
    a16 = '{"type":"input_audio_buffer.append","audio":"%s"}' % base64.b64encode(
        np.zeros(800, "<i2").tobytes()).decode()
    print(f"{'GA client append 16k->24k, 50 ms chunk':42} {'':10} "
          f"{per_event(lambda e: chain.client(e, s), a16, 2000) - base:10.0f}")
    print(f"{'GA client delta 24k->16k, 50 ms chunk':42} {'':10} "
          f"{per_event(lambda e: chain.server(e, s), DELTA, 2000) - base:10.0f}")


if __name__ == "__main__":
    main()
