"""``python -m service``: serve an index over HTTP.

    python -m service --encoder ENCODER --index INDEX_DIR [--database-url URL] [--host H] [--port P]
    python -m service keys create|list|revoke ...      (API keys; see service/keys.py)

Every flag has a ``LOOKALIKE_*`` environment variable (``LOOKALIKE_ENCODER``,
``LOOKALIKE_INDEX``, ...); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

FLAGS = {  # flag -> (Settings field, type, help)
    "--encoder": ("encoder", str, "encoder file, or open_clip:MODEL/TAG_OR_PATH (the one that built the index)"),
    "--index": ("index", str, "index root folder (CURRENT and versions/)"),
    "--database-url": ("database_url", str, "SQLAlchemy URL of the catalog (default: SQLite beside the index)"),
    "--collection": ("collection", str, "catalog collection the index was built for (default: default)"),
    "--host": ("host", str, "address to listen on (default: 127.0.0.1)"),
    "--port": ("port", int, "port to listen on (default: 8000)"),
    "--device": ("device", str, "torch device for the encoder (default: cpu)"),
    "--log-level": ("log_level", str, "uvicorn log level (default: info)"),
}


def parse_overrides(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (dest, kind, help_) in FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_)
    parser.add_argument("--add-collection", nargs=3, action="append", metavar=("NAME", "ENCODER", "INDEX"),
                        dest="extra_collections", default=None,
                        help="serve another collection beside the default one (repeatable); requests pick it "
                             "with ?collection=NAME")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if "extra_collections" in overrides:
        overrides["extra_collections"] = {name: {"encoder": encoder, "index": index}
                                          for name, encoder, index in overrides["extra_collections"]}
    return overrides


def _settings_problem(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        field = ".".join(str(p) for p in e["loc"])
        if e["type"] == "missing":
            parts.append(f"no {field} configured (pass --{field.replace('_', '-')} or set LOOKALIKE_{field.upper()})")
        else:
            parts.append(f"{field}: {e['msg']}")
    return "; ".join(parts)


def uvicorn_limits(settings) -> dict:
    """What uvicorn bounds per connection: idle keep-alive time, connections and requests at once
    (past them, uvicorn's own 503), and the size of a request's head while it is parsed."""
    return {"timeout_keep_alive": settings.keep_alive_timeout, "limit_concurrency": settings.max_connections,
            "h11_max_incomplete_event_size": 64 * 1024, "timeout_graceful_shutdown": 10}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        from service.keys import main as keys_main

        return keys_main(argv[1:])
    overrides = parse_overrides(argv)
    from service.app import create_app
    from service.settings import Settings
    from service.state import Resources, StartupError

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"error: {_settings_problem(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    loaded = []
    try:  # before uvicorn: a bad set-up is one line and exit 2, not a traceback
        loaded.append(Resources.load(settings))
        collections = {}
        for name in settings.extra_collections:
            collections[name] = Resources.load(settings.for_collection(name))
            loaded.append(collections[name])
    except StartupError as exc:
        for res in loaded:
            res.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from service.header_timeout import protocol_with_header_timeout

    try:
        uvicorn.run(create_app(settings, resources=loaded[0], collections=collections), host=settings.host,
                    port=settings.port, log_level=settings.log_level,
                    access_log=False,  # every request is logged once already, as JSON with its request id
                    **uvicorn_limits(settings), http=protocol_with_header_timeout(settings.header_timeout))
    finally:
        for res in loaded:
            res.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
