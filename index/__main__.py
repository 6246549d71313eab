"""``python -m index``: build, inspect, check and change index versions.

    python -m index build --encoder ENCODER --source FOLDER|MANIFEST|'SHARDS/{000..009}.tar' --out INDEX_DIR
                          [--database-url URL]
    python -m index info INDEX_DIR
    python -m index verify INDEX_DIR [--database-url URL]        exit 1 when index and catalog disagree
    python -m index delete INDEX_DIR --encoder ENCODER --id ID [--id ID ...]
    python -m index compact INDEX_DIR --encoder ENCODER             rebuild, re-choose and re-tune the current version
    python -m index duplicates INDEX_DIR [--threshold 0.95] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from index.catalog import default_database_url


def parse_bytes(text: str) -> int:
    """``512M``, ``4G``, ``1.5T`` or a plain number of bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 4G)") from None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (ValueError, FileNotFoundError) as exc:  # bad source, encoder, factory string, index folder
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", "-v", action="store_true", help="also the libraries' INFO logs (alembic)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="embed images and publish a new index version",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--encoder", required=True, help="encoder file, or open_clip:MODEL/TAG_OR_PATH")
    b.add_argument("--source", type=Path, required=True,
                   help="image folder, JSONL/CSV manifest, or webdataset shards ('DIR/{000..099}.tar')")
    b.add_argument("--out", type=Path, required=True, help="index root folder (versions/ and CURRENT)")
    b.add_argument("--database-url", default=None, help="SQLAlchemy URL of the catalog (default: SQLite beside --out)")
    b.add_argument("--collection", default="default")
    b.add_argument("--image-key", default="file", help="manifest column with the image path")
    b.add_argument("--factory", default="auto",
                   help="auto (chosen from the vector count and --memory-budget) or a FAISS index factory string "
                        "(e.g. Flat, HNSW32, IVF256,Flat, IVF1024,PQ32)")
    b.add_argument("--memory-budget", type=parse_bytes, default="4G", help="memory the index may use (for auto)")
    b.add_argument("--target-recall", type=float, default=0.95,
                   help="recall@10 against exact search that nprobe / efSearch are tuned for")
    b.add_argument("--delete-missing", action="store_true",
                   help="delete this source's items whose files are no longer in --source (never uploads or "
                        "another source's items)")
    b.add_argument("--keep-versions", type=int, default=5, help="published versions kept on disk")
    b.add_argument("--rebuild", action="store_true",
                   help="build, choose and tune a new index even when updating the current version would do")
    b.add_argument("--fetch-timeout", type=float, default=20.0, help="seconds per download attempt (URL sources)")
    b.add_argument("--fetch-retries", type=int, default=2, help="retries after a server or network error")
    b.add_argument("--max-download", type=parse_bytes, default="50M", help="largest image downloaded")
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--workers", type=int, default=2,
                   help="decoding worker processes (also the most downloads at once for URL sources)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="as before the command")
    i = sub.add_parser("info", help="describe the current index version")
    i.add_argument("out", type=Path)
    v = sub.add_parser("verify", help="check that the current index version and the catalog agree")
    v.add_argument("out", type=Path)
    v.add_argument("--database-url", default=None, help="catalog URL (default: SQLite beside the index folder)")
    d = sub.add_parser("delete", help="delete items: hidden at once, then a version without them is published")
    d.add_argument("out", type=Path)
    d.add_argument("--encoder", required=True, help="the encoder that built the index")
    d.add_argument("--id", type=int, action="append", required=True, help="item id (repeatable)")
    d.add_argument("--database-url", default=None, help="catalog URL (default: SQLite beside the index folder)")
    d.add_argument("--device", default="cpu")
    c = sub.add_parser("compact", help="publish the current version rebuilt from the catalog: tombstones dropped, "
                                       "index re-chosen and re-tuned for the present count")
    c.add_argument("out", type=Path)
    c.add_argument("--encoder", required=True, help="the encoder that built the index")
    c.add_argument("--database-url", default=None, help="catalog URL (default: SQLite beside the index folder)")
    c.add_argument("--keep-versions", type=int, default=None,
                   help="published versions kept on disk (default: as the build that published the current one)")
    c.add_argument("--device", default="cpu")
    u = sub.add_parser("duplicates", help="list pairs of near-identical items (cosine similarity >= threshold)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    u.add_argument("out", type=Path)
    u.add_argument("--threshold", type=float, default=0.95, help="cosine similarity at or above which a pair counts")
    u.add_argument("--neighbours", type=int, default=10, help="neighbours looked at per item")
    u.add_argument("--limit", type=int, default=20, help="pairs printed")
    u.add_argument("--json", type=Path, default=None, help="write every pair and group here")
    u.add_argument("--database-url", default=None, help="catalog URL (default: SQLite beside the index folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # a person needs the progress, the summaries and warnings, not each migration plugin
        logging.getLogger("alembic").setLevel(logging.WARNING)

    if args.command == "build":
        from core.malloc import retain_freed_memory
        from index.fetch import FetchLimits
        from index.job import BuildConfig, build

        retain_freed_memory()  # each batch frees and re-allocates the same activations

        report = build(BuildConfig(
            encoder=args.encoder, source=args.source, out=args.out,
            database_url=args.database_url or default_database_url(args.out), collection=args.collection,
            image_key=args.image_key, factory=args.factory, memory_budget=args.memory_budget,
            target_recall=args.target_recall, delete_missing=args.delete_missing, keep_versions=args.keep_versions,
            rebuild=args.rebuild,
            fetch=FetchLimits(timeout=args.fetch_timeout, retries=args.fetch_retries, max_bytes=args.max_download),
            batch_size=args.batch_size, workers=args.workers, device=args.device, progress=not args.no_progress,
        ))
        if report.rank != 0:
            print(f"rank {report.rank} of {report.world_size}: {report.embedded} embedded, {report.unchanged} "
                  f"unchanged, {len(report.failures)} files skipped")
            return 0
        what = {"built": "built", "updated": "updated", "unchanged": "nothing to change in"}[report.published]
        print(f"{what} {report.version} ({report.publish_detail}): {report.indexed} vectors; {report.embedded} "
              f"embedded ({report.images_per_second:.1f} img/s), {report.unchanged} unchanged, {report.deleted} "
              f"deleted; {len(report.failures)} files skipped"
              + (f"; {report.not_owned} left alone (uploads or another source's items)" if report.not_owned else ""))
        for uri, reason in report.failures[:20]:
            print(f"  skipped {uri}: {reason}")
        return 0
    if args.command == "info":
        from index.version import open_current

        v = open_current(args.out)
        print(json.dumps({**v.manifest.to_json(), "path": str(v.path), "ntotal": v.count}, indent=2))
        return 0
    if args.command == "verify":
        from index.verify import verify

        r = verify(args.out, args.database_url or default_database_url(args.out))
        print(f"version {r.version}, collection {r.collection!r}: {r.index_count} vectors in the index "
              f"({r.tombstones} tombstones besides), {r.catalog_count} live items with vectors in the catalog")
        if r.ok:
            print("ok: every live item has exactly one vector and every vector a live item")
            return 0
        print(f"MISMATCH: {len(r.missing_from_index)} items missing from the index (e.g. {r.missing_from_index[:5]}), "
              f"{len(r.not_in_catalog)} vectors without a live item (e.g. {r.not_in_catalog[:5]}), "
              f"{r.duplicates} duplicate ids, {len(r.stale)} items changed since they were indexed "
              f"(e.g. {r.stale[:5]}); publish again with `python -m index build`")
        return 1
    if args.command == "duplicates":
        from index.catalog import Catalog
        from index.duplicates import as_json, find_duplicates, format_report
        from index.version import open_current

        catalog = Catalog(args.database_url or default_database_url(args.out))
        try:
            report = find_duplicates(open_current(args.out), catalog, args.threshold, args.neighbours)
            print(format_report(report, catalog, args.limit))
        finally:
            catalog.dispose()
        if args.json:
            args.json.write_text(json.dumps(as_json(report), indent=1) + "\n")
        return 0
    if args.command in ("delete", "compact"):
        return _change(args)
    return 2


def _change(args: argparse.Namespace) -> int:
    """``delete`` and ``compact``: the publisher over the index folder, its catalog and the encoder."""
    from index.catalog import Catalog
    from index.publish import Publisher
    from index.version import open_current, read_manifest
    from training.encoder import load_encoder

    current = open_current(args.out, mmap=True)  # for its manifest: publishing reads the catalog
    catalog = Catalog(args.database_url or default_database_url(args.out))
    try:
        publisher = Publisher(catalog, args.out, load_encoder(args.encoder, args.device))
        if args.command == "delete":
            deleted, published = publisher.delete(args.id)
            unknown = sorted(set(args.id) - set(deleted))
            print(f"deleted {len(deleted)} items; {published.action} {published.path} ({published.detail})"
                  + (f"; not found or already deleted: {unknown}" if unknown else ""))
            return 0
        published = publisher.rebuild(keep=args.keep_versions)
    finally:
        catalog.dispose()
    print(f"built {published.path.name} from {current.name} ({current.manifest.tombstones} tombstones "
          f"dropped): {read_manifest(published.path).count} vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
