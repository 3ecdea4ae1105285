"""What one replica knows about one realm, kept together so it changes together."""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.models import AccessToken, Backoff, RealmCredentials


@dataclass(slots=True)
class RealmState:
    realm: str
    token: AccessToken | None = None
    # The store's generation this replica last saw; an invalidation above it drops the token.
    generation: int = 0
    # Raised on every local drop, so a fetch that began before it cannot write back.
    epoch: int = 0
    credentials: RealmCredentials | None = None
    last_used: float = 0.0
    last_refresh: float | None = None
    last_error: str | None = None
    backoff: Backoff | None = None

    def drop_token(self) -> None:
        self.token = None
        self.epoch += 1
