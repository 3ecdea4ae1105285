"""Development stack: start OpenBao, Redis, the development IdP and the broker as local
processes on loopback. Used by `broker dev`, the tests and the benchmarks; never in
production."""
