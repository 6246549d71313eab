"""``python -m index``: build and inspect index versions.

    python -m index build --encoder ENCODER --source FOLDER_OR_MANIFEST --out INDEX_DIR [--database-url URL]
    python -m index info INDEX_DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def default_database_url(out: Path) -> str:
    """SQLite next to the index folder: ``INDEX_DIR/../catalog.db``."""
    return f"sqlite:///{(Path(out).resolve().parent / 'catalog.db')}"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (ValueError, FileNotFoundError) as exc:  # bad source, encoder, factory string, index folder
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="embed images and publish a new index version",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--encoder", required=True, help="encoder file, or open_clip:MODEL/TAG_OR_PATH")
    b.add_argument("--source", type=Path, required=True, help="image folder or JSONL/CSV manifest")
    b.add_argument("--out", type=Path, required=True, help="index root folder (versions/ and CURRENT)")
    b.add_argument("--database-url", default=None, help="SQLAlchemy URL of the catalog (default: SQLite beside --out)")
    b.add_argument("--collection", default="default")
    b.add_argument("--image-key", default="file", help="manifest column with the image path")
    b.add_argument("--factory", default="Flat", help="FAISS index factory string (e.g. Flat, HNSW32, IVF256,PQ16)")
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    b.add_argument("--device", default="cpu")
    b.add_argument("--no-progress", action="store_true")
    i = sub.add_parser("info", help="describe the current index version")
    i.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "build":
        from index.build import BuildConfig, build

        report = build(BuildConfig(
            encoder=args.encoder, source=args.source, out=args.out,
            database_url=args.database_url or default_database_url(args.out), collection=args.collection,
            image_key=args.image_key, factory=args.factory, batch_size=args.batch_size, workers=args.workers,
            device=args.device, progress=not args.no_progress,
        ))
        print(f"published {report.version} with {report.indexed} vectors "
              f"({report.images_per_second:.1f} img/s); {len(report.failures)} files skipped")
        for uri, reason in report.failures[:20]:
            print(f"  skipped {uri}: {reason}")
        return 0
    if args.command == "info":
        from index.version import open_current

        v = open_current(args.out)
        print(json.dumps({**v.manifest, "path": str(v.path), "ntotal": v.count}, indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
