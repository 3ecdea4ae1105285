"""`PolicyFile`: the caller policy YAML, reloaded when the file changes.

A Kubernetes ConfigMap update swaps a symlink, so the file is re-`stat`ed (following
links) at most once a second. A broken new file is logged and ignored: the policy in
force stays until a good one arrives.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import yaml

from broker.core.policy import Policy, PolicyError

log = logging.getLogger(__name__)


def read_policy(path: Path, *, allow_empty: bool = True) -> Policy:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: {type(exc).__name__}") from exc
    if data is None and not allow_empty:
        # Most likely a file caught mid-write (truncated, not yet filled): taking it would
        # lock every caller out. Removing every caller is spelt `callers: []`.
        raise PolicyError(f"{path}: the file is empty")
    if data is not None and not isinstance(data, dict):
        raise PolicyError(f"{path}: the document must be a mapping")
    return Policy.from_mapping(data)


class PolicyFile:
    def __init__(self, path: Path | None, *, check_interval: float = 1.0) -> None:
        self._path = path
        self._interval = check_interval
        self._checked = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._policy = Policy.empty()
        if path is not None:
            self._stamp = self._stat()
            self._policy = read_policy(path)  # a broken file at start-up stops the broker

    def _stat(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> Policy:
        """The policy in force, reloading it first if the file changed."""
        if self._path is None:
            return self._policy
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            self._reload_if_changed()
        return self._policy

    def _reload_if_changed(self) -> None:
        assert self._path is not None
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return
        try:
            policy = read_policy(self._path, allow_empty=False)
            if self._stat() != stamp:
                return  # changed while we read it: take it at the next check, whole
        except PolicyError as exc:
            self._stamp = stamp
            log.error(
                "policy file rejected, keeping the policy in force", extra={"error": str(exc)}
            )
            return
        self._stamp = stamp
        self._policy = policy
        log.info("policy reloaded", extra={"callers": len(policy)})
