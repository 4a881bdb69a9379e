"""The stage chain of a session, in client -> upstream order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .relay.stage import Chain, Session
from .stages.frames import FrameStage

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import Gateway


def build_chain(gw: "Gateway", s: Session) -> Chain:
    stages: list = [FrameStage()]
    return Chain(stages)
