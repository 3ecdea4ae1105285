"""What one replica knows about each realm, and the registry that holds it.

The parts of the core share this state; none of them owns it. A part that must react when
a realm's token changes (the refresh scheduler) subscribes with `on_token_change` instead
of being called by the part that changed it.

Two counters say how current a realm's token is, one per scope:

- `shared_generation` is the *store's* generation, shared by every replica: each eviction
  or rotation raises it there, and a replica that sees a higher one drops its token;
- `local_epoch` is this process's own count of drops: a fetch that began in an earlier
  epoch cannot keep or serve its token.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.core import rules
from broker.core.models import AccessToken, Backoff, RealmCredentials, RealmStatus

TokenListener = Callable[["RealmState"], None]


class RealmState:
    __slots__ = (
        "_lifetime_seen_at",
        "_listener",
        "_token",
        "backoff",
        "credentials",
        "forced_window_until",
        "good",
        "key",
        "last_error",
        "last_refresh",
        "last_used",
        "local_epoch",
        "realm",
        "rejected",
        "rejected_failures",
        "rejected_retry_at",
        "scopes",
        "shared_generation",
        "token_lifetime",
    )

    def __init__(self, key: str, *, on_token_change: TokenListener | None = None) -> None:
        # One state per cached token: `key` is its slot (`rules.slot`), the realm alone for
        # the realm's default token, or the realm and a scope set.
        self.key = key
        self.realm, self.scopes = rules.split_slot(key)
        self._token: AccessToken | None = None
        self._listener = on_token_change
        self.shared_generation = 0
        self.local_epoch = 0
        self.credentials: RealmCredentials | None = None
        # The last credentials the IdP accepted, and a newer version it refused (the realm
        # is degraded while one is refused), retried from `rejected_retry_at` (wall time).
        self.good: RealmCredentials | None = None
        self.rejected: RealmCredentials | None = None
        self.rejected_failures = 0
        self.rejected_retry_at = 0.0
        # Monotonic reading of the last request for the realm (refresh stops when idle).
        self.last_used = 0.0
        # Wall time of the last successful fetch, and the code of the last failure.
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        # This replica's copy of the shared IdP backoff (kept when the store is down).
        self.backoff: Backoff | None = None
        # The lifetime of the newest token seen (what a new token would live), and this
        # replica's view of the shared forced-fetch window (monotonic; see min_ttl_guard).
        self.token_lifetime: float | None = None
        self._lifetime_seen_at = float("-inf")
        self.forced_window_until = 0.0

    def good_version(self) -> int | None:
        return self.good.version if self.good is not None else None

    @property
    def degraded(self) -> bool:
        """A newer secret version was refused and an older one is in use."""
        return self.rejected is not None

    @property
    def token(self) -> AccessToken | None:
        return self._token

    def keep(self, token: AccessToken) -> None:
        """Hold `token` unless the one held lives longer and is from the same secret."""
        if token.issued_at >= self._lifetime_seen_at:
            self._lifetime_seen_at = token.issued_at
            self.token_lifetime = token.lifetime()
        current = self._token
        if (
            current is None
            or token.expires_at >= current.expires_at
            or token.credential_version > current.credential_version
        ):
            self._set(token)

    def drop_token(self) -> None:
        """Drop the token (an eviction here): fetches begun before cannot write back."""
        self.local_epoch += 1
        self._set(None)

    def see_generation(self, generation: int) -> bool:
        """Note the store's generation; above ours means an eviction we missed, so the
        token goes. The epoch is left alone: whoever noticed is reading the new state."""
        if generation <= self.shared_generation:
            return False
        self.shared_generation = generation
        self._set(None)
        return True

    def _set(self, token: AccessToken | None) -> None:
        changed = token is not self._token
        self._token = token
        if changed and self._listener is not None:
            self._listener(self)


class RealmRegistry:
    """Every token slot this replica has been asked about, by slot name."""

    def __init__(self) -> None:
        self._states: dict[str, RealmState] = {}
        self._listeners: list[TokenListener] = []

    def on_token_change(self, listener: TokenListener) -> None:
        """Call `listener` whenever any realm's token is replaced or dropped."""
        self._listeners.append(listener)

    def get(self, realm: str) -> RealmState | None:
        return self._states.get(realm)

    def state(self, realm: str) -> RealmState:
        state = self._states.get(realm)
        if state is None:
            state = self._states[realm] = RealmState(realm, on_token_change=self._notify)
        return state

    def forget(self, realm: str) -> None:
        self._states.pop(realm, None)

    def all(self) -> list[RealmState]:
        return list(self._states.values())

    def of_realm(self, realm: str) -> list[RealmState]:
        """The states of every slot of `realm` (its default token and scoped ones)."""
        return [state for state in self._states.values() if state.realm == realm]

    def status(self, realm: str, *, now: float, skew: float) -> RealmStatus:
        """The realm as this replica sees it: its default token, and degraded while any of
        its slots serves with an older secret than the one the IdP refused."""
        state = self.state(realm)
        token = state.token
        valid = token is not None and rules.remaining(token, now=now, skew=skew) > 0
        rejected = [s.rejected.version for s in self.of_realm(realm) if s.rejected is not None]
        return RealmStatus(
            realm=realm,
            cached=valid,
            expires_at=token.expires_at if token is not None and valid else None,
            last_refresh=state.last_refresh,
            credential_version=state.credentials.version if state.credentials else None,
            last_error=state.last_error,
            verify=state.credentials.verify if state.credentials else None,
            degraded=bool(rejected),
            rejected_version=max(rejected, default=None),
        )

    def names(self) -> list[str]:
        return sorted(self._states)

    def _notify(self, state: RealmState) -> None:
        for listener in self._listeners:
            listener(state)
