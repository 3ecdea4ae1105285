"""`RealmCatalog`: which realms a caller may see (`GET /v1/realms`).

A plain caller sees the realms it may use: the names in its policy entry, or, for
`"*"`, every realm with credentials in the secret source. Auditors and admins see every
realm, the secret source's and those this replica holds state for, with the status the
broker keeps (cached, expiry, last refresh, credential version, last error).
"""

from __future__ import annotations

from collections.abc import Callable

from broker.core import rules
from broker.core.models import RealmStatus
from broker.core.policy import Caller
from broker.core.ports import SecretSource


def unknown_status(realm: str) -> RealmStatus:
    """The status of a realm this replica has not touched yet."""
    return RealmStatus(
        realm=realm,
        cached=False,
        expires_at=None,
        last_refresh=None,
        credential_version=None,
        last_error=None,
    )


class RealmCatalog:
    def __init__(
        self, *, secrets: SecretSource, statuses: Callable[[], dict[str, RealmStatus]]
    ) -> None:
        self._secrets = secrets
        self._statuses = statuses

    async def usable_by(self, caller: Caller) -> list[str]:
        """The realm names `caller` may use, sorted."""
        named = {realm for realm in caller.realms if realm != "*"}
        if "*" in caller.realms:
            named.update(await self._listed())
        return sorted(named)

    async def statuses(self) -> list[RealmStatus]:
        """Every realm with its status on this replica, sorted by name (auditors only)."""
        known = self._statuses()
        names = set(known) | set(await self._listed())
        return [known.get(name) or unknown_status(name) for name in sorted(names)]

    async def _listed(self) -> list[str]:
        # Names that could never be requested (a stray key in Vault) are not offered.
        return [name for name in await self._secrets.list_realms() if rules.is_valid_realm(name)]
