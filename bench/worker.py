"""The worker a benchmark measures: `worker.main()` in its own process, configured by the environment.

`--moto-port N` also runs moto on a thread of this process, to measure what
sharing the worker's GIL with moto costs (the default runs moto separately).
"""

from __future__ import annotations

import argparse

import worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--moto-port", type=int, default=None)
    args = parser.parse_args()
    moto = None
    if args.moto_port:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=args.moto_port, verbose=False)
        moto.start()
    try:
        worker.main()
    finally:
        if moto is not None:
            moto.stop()


if __name__ == "__main__":
    main()
