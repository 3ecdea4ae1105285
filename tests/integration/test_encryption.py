"""Tokens at rest in Redis: sealed with AES-256-GCM, bound to their realm."""

from __future__ import annotations

import redis

from broker.core.rules import token_key
from stack import Stack


def stored_value(stack: Stack, prefix: str, realm: str) -> bytes:
    value = redis.Redis.from_url(stack.redis.url).get(token_key(prefix, realm))
    assert value is not None
    return value


def test_redis_holds_no_part_of_the_token(stack: Stack) -> None:
    """The stored value contains neither the token nor any 12-character piece of it."""
    prefix = "sealed"
    url = stack.start_broker(BROKER_KEY_PREFIX=prefix).url
    realm = stack.new_realm()
    token = stack.get_token(url, realm.name).json()["access_token"]
    value = stored_value(stack, prefix, realm.name).decode()
    pieces = {token[i : i + 12] for i in range(len(token) - 11)}
    assert [] == [piece for piece in pieces if piece in value]


def test_value_moved_to_another_realm_is_rejected(stack: Stack) -> None:
    """A sealed value copied under another realm's key fails to open: that realm's own
    token is fetched instead of the copied one being served."""
    prefix = "moved"
    env = {"BROKER_KEY_PREFIX": prefix}
    first_broker = stack.start_broker(name="broker-a", **env)
    acme, globex = stack.new_realm("acme"), stack.new_realm("globex")
    acme_token = stack.get_token(first_broker.url, acme.name).json()["access_token"]
    client = redis.Redis.from_url(stack.redis.url)
    client.set(token_key(prefix, globex.name), stored_value(stack, prefix, acme.name), ex=600)

    fresh_broker = stack.start_broker(name="broker-b", **env)  # nothing in its memory
    response = stack.get_token(fresh_broker.url, globex.name)
    assert 200 == response.status_code
    assert acme_token != response.json()["access_token"]
    assert 1 == stack.idp_requests(globex.name)


def test_cache_key_lives_in_vault_and_is_shared(stack: Stack) -> None:
    """The data key is created once in Vault and every replica uses it."""
    first, second = stack.start_brokers(2)
    realm = stack.new_realm()
    token = stack.get_token(first.url, realm.name).json()["access_token"]
    assert token == stack.get_token(second.url, realm.name).json()["access_token"]
    keyring = stack.openbao.client().secrets.kv.v2.read_secret_version(
        path="atlas/broker/cache-key", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert keyring["current"] in keyring
