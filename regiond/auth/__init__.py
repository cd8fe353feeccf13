"""Who signed this request: SigV4 verification and authentication.

    sigv4.py     verifying SigV4: pure functions of the request's headers, the time and a signing
                 key; ``HeaderView``, the one view of a request's headers the edge reads
    authn.py     ``Authenticator``: access key -> principal, with cached signing keys (no database
                 round trip on the hot path)
    failures.py  failed authentication: bounded metric labels and a per-source throttle

Below the services and above the domain: ``regiond.protocol`` calls it before any operation,
and it imports neither ``protocol`` nor ``service`` nor aiohttp (a request's headers reach it as
a multidict), so it can be tested and reused without an HTTP server.
"""
