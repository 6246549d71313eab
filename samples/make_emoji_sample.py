"""Re-create ``samples/emoji`` from the full emoji dataset (run once by a maintainer).

Picks a deterministic subset of emoji codes that covers every category and every
subcategory, keeps both vendors' artwork of each picked code (so cross-vendor
image->image search can be tried), and copies the files and metadata rows.

    python samples/make_emoji_sample.py ../shared/datasets/emoji samples/emoji
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

PER_SUBCATEGORY = 4
MUST_HAVE = ["dog face", "cat face", "red apple", "pizza", "rocket", "grinning face", "house", "soccer ball"]


def main(src: Path, dst: Path) -> None:
    rows = [json.loads(line) for line in (src / "metadata.jsonl").read_text().splitlines() if line.strip()]
    by_code: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_code[row["code"]].append(row)
    by_sub: dict[str, list[str]] = defaultdict(list)
    for code, group in sorted(by_code.items()):
        if len(group) == 2:  # artwork from both vendors
            by_sub[group[0]["subcategory"]].append(code)
    rng = random.Random(0)
    picked: set[str] = set()
    for _sub, codes in sorted(by_sub.items()):
        picked.update(rng.sample(codes, min(PER_SUBCATEGORY, len(codes))))
    picked.update(code for code, group in by_code.items() if group[0]["name"] in MUST_HAVE)
    out = [row for row in rows if row["code"] in picked]
    for row in out:
        (dst / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / row["file"], dst / row["file"])
    with open(dst / "metadata.jsonl", "w") as f:
        for row in out:
            f.write(json.dumps(row) + "\n")
    print(f"{len(picked)} codes, {len(out)} images, {len({r['subcategory'] for r in out})} subcategories")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
