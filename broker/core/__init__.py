"""The broker's core: models, rules, ports and the `TokenBroker` service.

Nothing here imports an adapter, FastAPI, hvac, httpx or redis.
"""
