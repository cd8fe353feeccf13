"""Baseline (a): moto's KMS in server mode, the emulator most Python teams test against.

Started exactly as a team would start it (``moto_server -H 127.0.0.1 -p PORT``: werkzeug,
threaded, one process). moto does not check SigV4 signatures, so the same pre-signed
requests are accepted; its keys are created through its own CreateKey.
"""

from __future__ import annotations

import sys


def command(host: str, port: int) -> list[str]:
    """The command line that runs moto_server with this interpreter's moto."""
    return [sys.executable, "-m", "benchmarks.baselines.moto_runner", "-H", host, "-p", str(port)]


def main() -> None:
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
