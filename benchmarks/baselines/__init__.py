"""The servers regionkms is measured against: moto_server, and a minimal aiohttp server
that marks the ceiling (``work`` mode) and the floor (``floor`` mode) of this stack."""
