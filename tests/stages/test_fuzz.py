"""Fuzzing the stages with ill-typed events, so the next one is found here.

Thousands of events per stage, made by :mod:`.fuzzgen` from a corpus of
valid GA and beta events (values replaced at any depth, keys deleted or
added, containers of the wrong kind, broken text), in sessions of both
client dialects, with and without a beta upstream and with audio
conversion at work.  Each stage keeps its state across the events, so a
bad event meets the state the good ones built (conversion streams, items
in progress, responses in flight).

What must hold:

* a stage called directly never raises -- except ``orjson.JSONDecodeError``
  from ``ev.data`` for a client event whose text is not JSON, which the
  chain answers with ``invalid_json``;
* every event a stage forwards, replies or injects can be written as JSON;
  a reply is an ``error`` whose ``event_id`` is a string or null;
* through a whole chain built as production builds it (``build_chain``),
  nothing escapes, nothing is logged as a gateway bug (the chain's
  last-resort guard stays silent), the lane watchers take every frame, and
  an ordinary event sent after the garbage still goes through.

The seeds are fixed: a failure names the seed and the text, which replay it.
"""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from openopen8.billing import PriceTable
from openopen8.events import Event, wire_event
from openopen8.ledger import Grant, TokenBalance
from openopen8.pipeline import build_chain
from openopen8.relay.stage import Session
from openopen8.stages.audio import AudioStage
from openopen8.stages.dialect import DialectStage
from openopen8.stages.frames import FrameStage
from openopen8.stages.limits import LimitsStage
from openopen8.stages.metering import MeteringStage
from openopen8.store.base import TokenLimits

from . import fuzzgen as G

#: events per stage and configuration (x 6 configurations)
N = 3000

CONFIGS = [
    pytest.param("ga", "ga", {}, id="ga"),
    pytest.param("ga", "ga", {"dialect_source": "sniff"}, id="ga-sniffed"),
    pytest.param("beta", "ga", {"dialect_source": "header"}, id="beta"),
    pytest.param("ga", "ga", {"input_rate": 16000, "output_rate": 16000}, id="ga-16k"),
    pytest.param("beta", "beta", {"dialect_source": "header", "input_rate": 16000,
                                  "output_rate": 8000}, id="beta-16k-beta-upstream"),
    pytest.param("ga", "beta", {"output_rate": 16000}, id="ga-beta-upstream"),
]

_ERROR_CODES = {"invalid_value", "invalid_event", "invalid_json", "parameter_ignored",
                "insufficient_quota", "max_duration_exceeded", "idle_timeout", "policy_violation"}


class Sink:
    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.prices = PriceTable()

    def record(self, row: Any) -> None:
        self.rows.append(row)

    def opened(self, session_id: str, channel: str | None) -> None:
        pass

    def closed(self, end: Any, token_id: int) -> None:
        pass


def session(client: str, upstream: str, facts: dict[str, Any]) -> Session:
    s = Session(id="sess_fuzz", model="gpt-realtime", client_dialect=client,
                upstream_dialect=upstream, token=SimpleNamespace(id=7))
    s.facts.update(facts)
    return s


def corpora(client: str, upstream: str) -> tuple[list[dict], list[dict]]:
    """Client events a client of that dialect sends; server events as they
    reach the stage (a beta upstream's own, and GA ones past its edge)."""
    c = G.GA_CLIENT + (G.BETA_CLIENT if client == "beta" else [])
    srv = G.GA_SERVER + (G.BETA_SERVER if upstream == "beta" else [])
    return c, srv


def make_text(base: dict, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        return G.to_text(base)
    if r < 0.9:
        return G.to_text(G.mutate(base, rng))
    return G.raw_mutate(G.to_text(base), rng)


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def check_out(events: list[Event], what: str, came: str | None = None) -> None:
    """Every event can be written, as JSON -- unless the text that came was
    not JSON either (it goes on as it came; a rename swaps its type only)."""
    json_came = came is None or _is_json(came)
    for e in events:
        assert isinstance(e, Event), what
        if e.text != came and json_came:
            assert isinstance(orjson.loads(e.text), dict), what


def check_replies(s: Session, what: str) -> None:
    for e in s.to_client:
        d = orjson.loads(e.text)
        assert d["type"] == "error", what
        err = d["error"]
        assert err["code"] in _ERROR_CODES, (err, what)
        assert err["event_id"] is None or isinstance(err["event_id"], str), (err, what)
    check_out(s.to_upstream, what)


def as_list(out: Any) -> list[Event]:
    if out is None:
        return []
    return [out] if isinstance(out, Event) else list(out)


def run_stages(stages: list[Any], s: Session, seed: int, n: int = N) -> None:
    """``n`` events, each direction at random, through ``stages`` called
    directly (each stage's output is the next one's input, as in a chain)."""
    rng = random.Random(seed)
    client, server = corpora(s.client_dialect, s.upstream_dialect)
    for st in stages:
        if hasattr(st, "on_open"):
            st.on_open(s)
    for i in range(n):
        up = rng.random() < 0.5
        text = make_text(rng.choice(client if up else server), rng)
        what = f"seed {seed} event {i} ({'client' if up else 'server'}): {text[:600]!r}"
        pending = [wire_event(text)]
        for st in (stages if up else reversed(stages)):
            nxt: list[Event] = []
            for ev in pending:
                try:
                    out = (st.on_client if up else st.on_server)(ev, s)
                except orjson.JSONDecodeError:
                    if up and not _is_json(text):
                        continue              # the chain answers invalid_json
                    raise AssertionError(f"{st.name} raised on {what}") from None
                except Exception as exc:  # noqa: BLE001
                    raise AssertionError(f"{st.name} raised {exc!r} on {what}") from exc
                nxt += as_list(out)
            pending = nxt
        check_out(pending, what, text)
        check_replies(s, what)
        s.to_client.clear()
        s.to_upstream.clear()
        s.close_request = None


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_frames_stage(client, upstream, facts):
    run_stages([FrameStage()], session(client, upstream, facts), seed=1)


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_dialect_stage_client_edge(client, upstream, facts):
    run_stages([DialectStage("client")], session(client, upstream, facts), seed=2)


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_dialect_stage_upstream_edge(client, upstream, facts):
    run_stages([DialectStage("upstream")], session(client, "beta", facts), seed=3)


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_audio_stage(client, upstream, facts):
    run_stages([AudioStage()], session(client, upstream, facts), seed=4)


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_limits_and_metering_stages(client, upstream, facts):
    meter = MeteringStage(Sink(), PriceTable(), token_id=7)
    balance = TokenBalance(token_id=7, quota_nanos=10**17, spent_nanos=0)
    limits = LimitsStage(meter, TokenLimits(idle_timeout=3600.0), balance)
    run_stages([limits, meter], session(client, upstream, facts), seed=5)


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_dialect_and_audio_stages_in_a_row(client, upstream, facts):
    """The client edge's GA output is what the audio stage reads."""
    run_stages([DialectStage("client"), AudioStage()], session(client, upstream, facts), seed=6)


# ------------------------------------------------------------------ a whole chain

#: a client event no stage changes: after any garbage, it must still go through
PROBE = {"type": "conversation.item.delete", "event_id": "probe", "item_id": "item_A"}


def production_chain(s: Session, sink: Sink):
    """The chain ``pipeline.build_chain`` makes for a metered session (its
    turns logged: the transcript stage is fuzzed too)."""
    gw = SimpleNamespace(ledger=sink, settings=SimpleNamespace(log_transcripts=True),
                         turns=SimpleNamespace(add=lambda turns: None))
    s.facts["grant"] = Grant(limits=TokenLimits(idle_timeout=3600.0),
                             balance=TokenBalance(token_id=7, quota_nanos=10**17, spent_nanos=0))
    chain = build_chain(gw, s)  # type: ignore[arg-type]
    lanes: dict[tuple[bool, str], tuple] = {}
    chain.on_lane = lambda up, t, watchers: lanes.__setitem__((up, t), watchers)
    chain.on_lanes_reset = lanes.clear
    chain.open(s)
    return chain, lanes


def run_chain(s: Session, seed: int, n: int = N) -> int:
    """``n`` events through a production chain, as the relay passes them
    (a lane's frames go to its watchers only); returns how many probes
    went through after garbage."""
    chain, lanes = production_chain(s, Sink())
    rng = random.Random(seed)
    c_corpus, s_corpus = corpora(s.client_dialect, s.upstream_dialect)
    limits = next(st for st in chain.stages if isinstance(st, LimitsStage))
    probes = 0
    for i in range(n):
        up = rng.random() < 0.5
        text = make_text(rng.choice(c_corpus if up else s_corpus), rng)
        what = f"seed {seed} event {i} ({'client' if up else 'server'}): {text[:600]!r}"
        ev = wire_event(text)
        watchers = lanes.get((up, ev.type)) if ev.type is not None else None
        if watchers is not None and text.isascii():
            for watch in watchers:            # the relay's lane: bytes to watchers only
                watch(text.encode())
        else:
            try:
                out = chain.pass_client(ev, s) if up else chain.pass_server(ev, s)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"the chain raised {exc!r} on {what}") from exc
            check_out(as_list(out), what, text)
        codes = [orjson.loads(e.text)["error"]["code"] for e in s.to_client
                 if e.type == "error"]
        assert "event_not_processed" not in codes, what
        check_replies(s, what)
        s.to_client.clear()
        s.to_upstream.clear()
        s.close_request = None
        if up and not limits.stopping and rng.random() < 0.2:
            probes += 1
            out = as_list(chain.pass_client(wire_event(G.to_text(PROBE)), s))
            assert [orjson.loads(e.text) for e in out] == [PROBE], what
            assert s.to_client == [], what
    return probes


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_a_production_chain_survives_everything(client, upstream, facts, caplog):
    caplog.set_level(logging.WARNING, logger="openopen8")
    s = session(client, upstream, facts)
    assert run_chain(s, seed=7) > 100
    bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bugs == [], bugs[0].getMessage()


def test_lone_surrogate_trailing_comma_and_infinity_are_answered_invalid_json():
    """The chain answers text that is not JSON once a stage parses it."""
    s = session("ga", "ga", {})
    chain, _ = production_chain(s, Sink())
    for text in ('{"type":"session.update","session":{"type":"realtime",},}',
                 '{"type":"session.update","session":{"type":"realtime","instructions":"\\ud800"}}',
                 '{"type":"session.update","session":{"type":"realtime","audio":{"input":'
                 '{"format":{"type":"audio/pcm","rate":1e400}}}}}'):
        assert chain.client(wire_event(text), s) == []
        (reply,) = s.to_client
        assert orjson.loads(reply.text)["error"]["code"] == "invalid_json"
        s.to_client.clear()


FULL_POLICY = {"instructions": "Operator rules.", "instructions_mode": "prefix",
               "voices": ["marin", "cedar"], "max_output_tokens": 200,
               "tools": [{"type": "function", "name": "lookup", "parameters": {}}],
               "modalities": ["text"], "transcription_model": "whisper-1"}


@pytest.mark.parametrize("client,upstream,facts", CONFIGS)
def test_policy_stage(client, upstream, facts):
    from openopen8.stages.policy import PolicyStage
    run_stages([PolicyStage(FULL_POLICY)], session(client, upstream, facts), seed=6)
