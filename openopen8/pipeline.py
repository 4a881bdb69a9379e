"""The stage chain of a session, in client -> upstream order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .relay.stage import Chain, Session
from .stages.frames import FrameStage
from .stages.limits import LimitsStage
from .stages.metering import MeteringStage

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import Gateway


def build_chain(gw: "Gateway", s: Session) -> Chain:
    stages: list = [FrameStage()]
    grant = s.facts.get("grant")    # set by Ledger.admit in web/realtime.py
    if grant is not None:
        # metering nearest the upstream: it sees what the upstream bills, in its dialect
        meter = MeteringStage(gw.ledger, gw.ledger.prices, s.token.id)
        stages += [LimitsStage(meter, grant.limits, grant.balance), meter]
    return Chain(stages)
