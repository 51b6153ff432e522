"""``make bench``: the runtime's figures, each beside a baseline measured in the same run.

``python -m bench`` starts a gateway (``python -m runtime``) on a free loopback port with a
fresh temporary state directory, deploys ``examples/hello``, runs the benchmarks below and
writes ``bench/results.json``, then prints a summary table.

* :mod:`bench.sync_invoke`: synchronous calls through the gateway vs straight to the
  function process (wrk, c50 and c10): req/s, p50/p99, gateway CPU per request.
* :mod:`bench.async_drain`: 1,000 calls to ``/async-function/hello`` drained by the queue
  workers vs the same 1,000 calls made synchronously.
* :mod:`bench.deploy_ready`: deploy-to-ready with a cached virtualenv vs starting the
  same build context's ``index.py`` by hand.

:mod:`bench.harness` holds what they share: process bookkeeping (every process started
is stopped by its PID), the gateway, ``/proc`` readers, wrk, and the result records.
"""
