"""The caller's credential for the broker, and where the SDK finds its settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from atlas_broker_client.errors import BrokerConfigError

DEFAULT_BROKER_URL = "http://127.0.0.1:8080"


def settings_from_env(
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str | None, str | None]:
    """(`BROKER_URL`, `BROKER_API_KEY`, `BROKER_JWT_FILE`): exactly one credential set."""
    env = os.environ if environ is None else environ
    api_key, jwt_file = env.get("BROKER_API_KEY") or None, env.get("BROKER_JWT_FILE") or None
    if (api_key is None) == (jwt_file is None):
        raise BrokerConfigError("set exactly one of BROKER_API_KEY or BROKER_JWT_FILE")
    return env.get("BROKER_URL") or DEFAULT_BROKER_URL, api_key, jwt_file


class Credential:
    """The caller's credential for the broker: a fixed API key, or a workload JWT file.

    The file is read afresh for every broker request (one per token lifetime), so a
    rotated file, such as a Kubernetes projected service-account token, is picked up
    as soon as it changes.
    """

    def __init__(self, api_key: str | None, jwt_file: str | os.PathLike[str] | None) -> None:
        if (api_key is None) == (jwt_file is None):
            raise BrokerConfigError("pass exactly one of api_key or jwt_file")
        if api_key is not None and not api_key.strip():
            raise BrokerConfigError("api_key is empty")
        self._api_key = api_key.strip() if api_key is not None else None
        self.jwt_file = Path(jwt_file) if jwt_file is not None else None

    def read(self) -> str:
        if self._api_key is not None:
            return self._api_key
        assert self.jwt_file is not None
        try:
            value = self.jwt_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BrokerConfigError(
                f"cannot read the workload JWT file {self.jwt_file} ({type(exc).__name__})"
            ) from None
        if not value:
            raise BrokerConfigError(f"the workload JWT file {self.jwt_file} is empty")
        return value

    def describe(self) -> str:
        return "api_key" if self.jwt_file is None else f"jwt_file={str(self.jwt_file)!r}"
