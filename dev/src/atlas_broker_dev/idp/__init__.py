"""A Keycloak-compatible identity provider for development and tests. Never for production.

It speaks the real protocol over HTTP (client-credentials token endpoint, JWKS, discovery
under ``/auth/realms/{realm}``) with in-memory keys and clients, plus ``/_dev`` endpoints
that count requests, rotate secrets and inject faults. ``broker dev`` and the integration
tests run it with ``python -m atlas_broker_dev.idp``. It imports nothing from ``broker``.
"""

from atlas_broker_dev.idp.app import create_idp_app
from atlas_broker_dev.idp.config import DevClient, IdPConfig

__all__ = ["DevClient", "IdPConfig", "create_idp_app"]
