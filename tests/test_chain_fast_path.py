"""The relay's path through the chain: one event in, the same object out
when no stage touches it (no list built), and the list semantics of
``Chain.client`` / ``Chain.server`` otherwise."""

from openopen8.events import Event
from openopen8.relay.stage import BaseStage, Chain, Session


class Drop(BaseStage):
    def on_client(self, ev, s):
        return None if ev.type == "drop" else ev

    def on_server(self, ev, s):
        return None if ev.type == "drop" else ev


class Swap(BaseStage):
    def on_client(self, ev, s):
        return Event.from_data({"type": ev.type + ".swapped"}) if ev.type == "swap" else ev

    def on_server(self, ev, s):
        return self.on_client(ev, s)


class Split(BaseStage):
    def on_client(self, ev, s):
        return [Event.from_data({"type": "one"}), Event.from_data({"type": "two"})] \
            if ev.type == "split" else ev

    def on_server(self, ev, s):
        return self.on_client(ev, s)


class Mark(BaseStage):
    def __init__(self, tag):
        self.tag = tag
        self.seen = []

    def on_client(self, ev, s):
        self.seen.append(ev.type)
        return ev

    def on_server(self, ev, s):
        self.seen.append(ev.type)
        return ev


def session():
    return Session(id="s", model="m")


def test_untouched_event_comes_back_as_itself():
    ev = Event('{"type":"x"}')
    chain = Chain([Drop(), Swap(), Split()])
    assert chain.pass_client(ev, session()) is ev
    assert chain.pass_server(ev, session()) is ev
    assert Chain([]).pass_client(ev, session()) is ev


def test_dropped_replaced_and_split_events():
    s = session()
    after = Mark("after")
    chain = Chain([Drop(), Swap(), Split(), after])
    assert chain.pass_client(Event('{"type":"drop"}'), s) == []
    out = chain.pass_client(Event('{"type":"swap"}'), s)
    assert isinstance(out, Event) and out.type == "swap.swapped"
    out = chain.pass_client(Event('{"type":"split"}'), s)
    assert [e.type for e in out] == ["one", "two"]
    assert after.seen == ["swap.swapped", "one", "two"]     # the rest of the chain saw both


def test_server_side_runs_in_reverse_and_splits_finish_the_rest():
    s = session()
    first = Mark("first")           # nearest the client: runs last on server events
    chain = Chain([first, Split(), Drop()])
    out = chain.pass_server(Event('{"type":"split"}'), s)
    assert [e.type for e in out] == ["one", "two"] and first.seen == ["one", "two"]
    assert chain.server(Event('{"type":"drop"}'), s) == []
    ev = Event('{"type":"k"}')
    assert chain.server(ev, s) == [ev] and chain.client(ev, s) == [ev]


class Picky(Mark):
    """Sees only the types in ``wanted`` (which the test changes)."""

    def __init__(self, tag, wanted):
        super().__init__(tag)
        self.wanted = set(wanted)

    def sees_client(self, t, s):
        return t in self.wanted

    def sees_server(self, t, s):
        return t in self.wanted


def test_stages_see_only_the_types_they_ask_for_until_rechain():
    s = session()
    picky, every = Picky("p", {"a"}), Mark("all")
    chain = Chain([picky, every])
    chain.open(s)
    for t in ("a", "b", "a"):
        chain.pass_client(Event('{"type":"%s"}' % t), s)
        chain.pass_server(Event('{"type":"%s"}' % t), s)
    assert picky.seen == ["a", "a", "a", "a"]
    assert every.seen == ["a", "a", "b", "b", "a", "a"]
    picky.wanted.add("b")
    chain.pass_client(Event('{"type":"b"}'), s)
    assert picky.seen[-1] == "a"          # the chain remembered: no call
    s.rechain()
    chain.pass_client(Event('{"type":"b"}'), s)
    assert picky.seen[-1] == "b"


def test_a_renamed_event_meets_the_stages_that_want_its_new_type():
    s = session()
    late = Picky("late", {"swap.swapped"})
    chain = Chain([Swap(), late])
    out = chain.pass_client(Event('{"type":"swap"}'), s)
    assert out.type == "swap.swapped" and late.seen == ["swap.swapped"]


def test_limits_watch_deltas_only_once_a_token_has_a_quota():
    from types import SimpleNamespace
    from openopen8.stages.limits import LimitsStage
    bal = SimpleNamespace(quota_nanos=None, remaining=lambda: 10**12, exhausted=lambda: False)
    limits = LimitsStage(SimpleNamespace(inflight=set()),
                         SimpleNamespace(max_duration=None, idle_timeout=None), bal)
    s = session()
    chain = Chain([limits])
    chain.open(s)
    delta = "response.output_audio.delta"
    assert not limits.sees_server(delta, s) and limits.sees_server("response.done", s)
    bal.quota_nanos = 5
    limits.on_tick(0.0, s)                 # the next tick notices the new quota
    assert limits.sees_server(delta, s) and not chain._down
