"""Attacker position: an authenticated caller allowed a realm, using `min_ttl` to make the
broker hammer the realm's IdP. Against a real running broker, OpenBao, Redis and the
development IdP, whose /_dev counters tell how many token requests reached it."""

from __future__ import annotations

import time

import httpx

from stack import Stack

LIFETIME = 3600  # the development IdP's tokens
SKEW = 30  # BROKER_EXPIRY_SKEW default
# A token of age >= 1 s cannot meet this; a fresh one can: each such request, a second
# after the last fetch, would force a new fetch.
JUST_SATISFIABLE = LIFETIME - SKEW - 1
# Lets the cached token age past JUST_SATISFIABLE (min_ttl is whole seconds).
AGEING = 1.2


def _problem_type(response: httpx.Response) -> str:
    return str(response.json().get("type", "")).rsplit("/", 1)[-1]


def test_min_ttl_no_token_can_meet_makes_no_idp_request(stack: Stack) -> None:
    """20 requests with min_ttl=86400 on a realm of 1-hour tokens: 422 each, and the IdP
    sees no request beyond the one that fetched the realm's token."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code

    answers = [stack.get_token(broker.url, realm.name, min_ttl=86400) for _ in range(20)]

    assert ([422] * 20, {"min-ttl-unsatisfiable"}, 1) == (
        [answer.status_code for answer in answers],
        {_problem_type(answer) for answer in answers},
        stack.idp_requests(realm.name),
    )


def test_min_ttl_no_token_can_meet_on_a_cold_realm_costs_one_idp_request(stack: Stack) -> None:
    """On a realm never fetched before, 20 such requests cost at most one IdP request (the
    one that teaches the broker the realm's token lifetime)."""
    broker = stack.start_broker()
    realm = stack.new_realm()

    answers = [stack.get_token(broker.url, realm.name, min_ttl=86400) for _ in range(20)]

    assert ([422] * 20, 1) == (
        [answer.status_code for answer in answers],
        stack.idp_requests(realm.name),
    )


def test_forced_fetches_happen_once_per_interval(stack: Stack) -> None:
    """Requests whose min_ttl only a brand-new token meets, a second apart, force one fetch
    per BROKER_FORCED_FETCH_INTERVAL (10 s): the others get 422 min-ttl-unsatisfiable with
    Retry-After."""
    broker = stack.start_broker()
    realm = stack.new_realm()
    assert 200 == stack.get_token(broker.url, realm.name).status_code

    answers = []
    for _ in range(5):
        time.sleep(AGEING)
        answers.append(stack.get_token(broker.url, realm.name, min_ttl=JUST_SATISFIABLE))

    assert [200, 422, 422, 422, 422] == [answer.status_code for answer in answers]
    assert {"min-ttl-unsatisfiable"} == {_problem_type(a) for a in answers[1:]}
    assert all(1 <= int(a.headers["Retry-After"]) <= 10 for a in answers[1:])
    assert 2 == stack.idp_requests(realm.name)


def test_forced_fetch_window_is_shared_by_replicas(stack: Stack) -> None:
    """A fetch forced on one replica closes the window on the others too."""
    first, second = stack.start_brokers(2)
    realm = stack.new_realm()
    assert 200 == stack.get_token(first.url, realm.name).status_code
    assert 200 == stack.get_token(second.url, realm.name).status_code
    time.sleep(AGEING)
    assert 200 == stack.get_token(first.url, realm.name, min_ttl=JUST_SATISFIABLE).status_code
    time.sleep(AGEING)

    refused = stack.get_token(second.url, realm.name, min_ttl=JUST_SATISFIABLE)

    assert (422, 2) == (refused.status_code, stack.idp_requests(realm.name))
