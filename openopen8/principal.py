"""Who a request is: a gateway token, or a client secret minted with one.

"One principal": both resolve to the token that pays and whose limits and
policy apply; the secret only narrows it (one model, a starting session, a
number of uses).  Nothing after admission knows which credential came in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .store.base import ClientSecretRecord, TokenRecord

#: client secrets look like OpenAI's ephemeral keys
CLIENT_SECRET_PREFIX = "ek_"


@dataclass
class Principal:
    token: TokenRecord                         # who pays, whose limits and policy
    secret: ClientSecretRecord | None = None   # the client secret, when one came in

    @property
    def name(self) -> str:
        """For logs: the token's name, and the secret's prefix when one was used."""
        return self.token.name if self.secret is None else f"{self.token.name} (secret {self.secret.prefix}…)"

    def model_for(self, asked: str) -> str:
        """The model of the session: the URL's, else the secret's."""
        return asked or (self.secret.model if self.secret is not None and self.secret.model else "")

    def model_problem(self, model: str) -> str | None:
        """Why this principal may not use ``model`` (None: it may)."""
        if self.secret is not None and self.secret.model and model != self.secret.model:
            return f"This client secret is for the model {self.secret.model}, not {model}."
        if not self.token.allows(model):
            return f"This gateway token may not use the model {model}."
        return None

    def allows(self, model: str) -> bool:
        return self.model_problem(model) is None

    def initial_session(self) -> dict[str, Any] | None:
        """The GA session a secret starts its sessions with (None for a token)."""
        return dict(self.secret.session) if self.secret is not None and self.secret.session else None
