"""Running the node as processes: the HTTP runner and its process-wide tuning.

    serve.py         ``regiond serve``: N worker processes on one port (SO_REUSEPORT)
    supervisor.py    the parent: starts the workers, respawns the ones that die, stops them all
    listener.py      aiohttp's server with the bounds a public endpoint needs (header, body, idle
                     time, connections per worker, TLS handshakes)
    client_tls.py    the client endpoint's TLS certificate, re-read on SIGHUP
    metrics.py       the Prometheus registry every layer updates, rendered on ``/metrics``
    node_metrics.py  one node-wide ``/metrics`` view merged from the workers' snapshots
    heap.py          keeping CPython's cyclic GC off the long-lived cached objects

With ``regiond.protocol`` and the composition root ``regiond.app``, the only aiohttp user in
``regiond`` (the listener and the workers are HTTP serving, not request handling).
"""
