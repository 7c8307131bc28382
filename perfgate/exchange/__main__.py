"""``python -m perfgate.exchange``: run the reference exchange in this process.

Prints one line ``{"event": "listening", "url": "http://HOST:PORT"}`` on stdout once bound (so a
parent that asked for port 0 learns the port), serves until SIGTERM/SIGINT and exits 0. A bad
option prints one ``error: …`` line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from perfgate.exchange import ConfigError, ExchangeConfig


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m perfgate.exchange", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--config-json", default="{}", help="ExchangeConfig options as JSON")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one goes away",
    )
    return parser.parse_args(argv)


def _announce(url: str) -> None:
    sys.stdout.write(json.dumps({"event": "listening", "url": url}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        options = json.loads(args.config_json)
        config = ExchangeConfig.from_dict(options)
    except ValueError as exc:  # json.JSONDecodeError and ConfigError are both ValueErrors
        what = "option " if isinstance(exc, ConfigError) else "--config-json: "
        print(f"error: {what}{exc}", file=sys.stderr, flush=True)
        return 2
    from perfgate.exchange.app import serve

    parent_pid = os.getppid() if args.exit_with_parent else None
    try:
        serve(args.host, args.port, config, on_listening=_announce, parent_pid=parent_pid)
    except OSError as exc:  # e.g. the port is taken
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
