"""The operator commands, one module per command group (``regiond <group> ...``).

    audit.py            ``regiond audit verify|query|export``
    cluster.py          ``regiond cluster init``: every file of a replicated cluster, non-interactively
    iam.py              ``regiond iam``: accounts, users, roles, access keys, identity policies
    import_material.py  ``regiond import-material``: import key material, start to finish
    policy.py           ``regiond policy simulate``
    replication.py      ``regiond replication status|make-ca|issue-cert|peers-file``
    cluster_file.py     reading ``cluster.json`` (written by ``regiond dev``) for all of them

Each module adds its group's parser (``add_*_parser``) to the one ``regiond/__main__.py`` builds.
Commands are composition, as the composition root is: they may wire any part of the node,
``replication`` included.
"""
