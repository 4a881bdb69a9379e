"""The stage chain of a session, in client -> upstream order:

    [frames] [dialect: client edge] [policy] [audio] [limits] [metering] [transcripts]
    [dialect: upstream edge]

GA is the internal dialect: every stage between the two dialect stages sees
GA events only.  The upstream-edge dialect stage is there only when the
upstream speaks beta (an Azure preview deployment); the policy stage only for a
token with a policy; the transcripts stage only for a session whose turns are
logged (``log_transcripts``).  Stages keep per-session
state in ``Session.facts``, so one instance of each serves every session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .relay.stage import Chain, Session
from .stages.audio import AudioStage
from .stages.dialect import DialectStage
from .stages.frames import FrameStage
from .stages.limits import LimitsStage
from .stages.metering import MeteringStage
from .stages.transcripts import TranscriptStage
from .stages.policy import PolicyStage

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import Gateway

_FRAMES = FrameStage()
_DIALECT_CLIENT = DialectStage("client")
_DIALECT_UPSTREAM = DialectStage("upstream")
_AUDIO = AudioStage()


def logs_transcripts(gw: "Gateway", s: Session) -> bool:
    """A session's turns are logged when its token says so, else when the
    gateway's ``log_transcripts`` setting does (off by default)."""
    own = getattr(s.token, "log_transcripts", None)
    return bool(gw.settings.log_transcripts if own is None else own)


def build_chain(gw: "Gateway", s: Session) -> Chain:
    stages: list = [_FRAMES, _DIALECT_CLIENT]
    policy = getattr(s.token, "policy", None)
    if policy:      # what the operator pinned for the token, before anything reads the session
        stages.append(PolicyStage(policy))
    stages.append(_AUDIO)
    grant = s.facts.get("grant")    # set by Ledger.admit in web/realtime.py
    if grant is not None:
        # metering last before the upstream's edge: it sees what the upstream bills, in
        # the upstream's audio format; limits just before it, to read what it counted
        meter = MeteringStage(gw.ledger, gw.ledger.prices, s.token.id)
        stages += [LimitsStage(meter, grant.limits, grant.balance, grant), meter]
    if logs_transcripts(gw, s):     # the session log: only then is the stage in the chain
        stages.append(TranscriptStage(gw.turns, gw.ledger.prices))
    if s.upstream_dialect == "beta":
        stages.append(_DIALECT_UPSTREAM)
    return Chain(stages)
