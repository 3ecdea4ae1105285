"""Development pieces of the Atlas Token Broker, never in production: the development IdP
(`atlas_broker_dev.idp`) and the local stack of OpenBao, Redis, the IdP and broker
processes on loopback (`atlas_broker_dev.stack`) that `broker dev`, the tests and the
benchmarks share."""
