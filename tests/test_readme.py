"""The README as a test: every ``sh`` block in README.md is run here, or says why it cannot be.

A block that cannot run on a 2-core machine without a GPU, other machines or Docker carries a
marker on the line before its fence::

    <!-- not-run: needs GPUs -->

Every other block is run command by command, in a scratch folder that holds the repository's
``samples`` and ``training`` (so relative paths work and outputs land there), with these rewrites:
``.venv/bin/python`` is this interpreter, ``localhost:8000`` a demo-like service (a micro CLIP and
the sample indexed into ``data/index`` and ``data/catalog.db``, served by a real uvicorn),
``../shared/datasets/`` the datasets beside the checkout (a manifest there cut to its first 48
emoji, both vendors: the commands' work, not their minutes), placeholders (``DIGITS_FOLDER``) real folders,
``lk_...`` the key the block's ``keys create`` printed, and training runs get a tiny step count.
Each curl fails on an HTTP error (``--fail-with-body``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, running_service

README = REPO / "README.md"
SHARED = REPO.parent / "shared" / "datasets"
MARKER = re.compile(r"<!--\s*not-run:\s*(?P<why>.*?)\s*-->")
PLACEHOLDERS = {"DIGITS_FOLDER": str(SHARED / "mnist-5k")}
TINY = {  # appended to training commands: what they do, in seconds instead of minutes
    "clip": ["--steps", "2", "--warmup", "1", "--workers", "0", "--no-progress"],
    "simclr": ["--steps", "2", "--warmup", "1", "--workers", "0", "--no-progress"],
    "eval": ["--linear-iters", "20"],
    "export": [],
}


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    text: str
    not_run: str | None  # the marker's reason


def readme_blocks(text: str) -> list[Block]:
    """The ``sh``/``bash`` fenced blocks of a Markdown text, with the not-run marker before each (if any)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(sh|bash|shell|console)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        blocks.append(Block(i + 1, "\n".join(lines[i + 1:end]), marker.group("why") if marker else None))
        i = end + 1
    return blocks


def commands(block: str) -> list[str]:
    """One string per command: continuation lines joined, comments and blank lines dropped."""
    out, pending = [], ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((pending + line).strip())
        pending = ""
    return out


def kind(command: str) -> str | None:
    """What runs a README command here, or None when this test cannot run it."""
    words = shlex.split(command)
    if words[0] == "curl":
        return "curl"
    if words[0] in (".venv/bin/python", "python") and words[1:2] == ["-m"]:
        module = words[2]
        if module == "service" and words[3:4] == ["keys"]:
            return "keys"
        if module == "training" and words[3] in TINY:
            return "training"
    return None


def test_every_block_runs_here_or_says_why():
    blocks = readme_blocks(README.read_text())
    assert blocks, "README.md has no sh blocks: is the parser still right?"
    for block in blocks:
        if block.not_run is not None:
            assert block.not_run, f"README.md:{block.line}: a not-run marker needs its reason"
            continue
        unknown = [c for c in commands(block.text) if kind(c) is None]
        assert not unknown, (f"README.md:{block.line}: this test cannot run {unknown}; teach it how, or put "
                             "'<!-- not-run: WHY -->' on the line before the block")


def test_the_parser_reads_markers_blocks_and_continuations():
    text = ("intro\n\n<!-- not-run: needs a GPU -->\n```sh\ntorchrun x\n```\n\n```sh\n# note\n"
            "curl -s a \\\n     -d b\n\n.venv/bin/python -m service keys list\n```\n```python\nprint()\n```\n")
    first, second = readme_blocks(text)
    assert (first.line, first.not_run, commands(first.text)) == (4, "needs a GPU", ["torchrun x"])
    assert second.not_run is None and commands(second.text) == ["curl -s a       -d b",
                                                                ".venv/bin/python -m service keys list"]
    assert [kind(c) for c in commands(second.text)] == ["curl", "keys"]
    assert kind("make demo") is None and kind(".venv/bin/python -m training clip --data x") == "training"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, small_manifest, micro_encoder) -> dict:
    """A folder laid out as a fresh clone after ``make demo`` (with a micro encoder), and its service."""
    from index.job import BuildConfig, build

    root = tmp_path_factory.mktemp("readme")
    for name in ("samples", "training"):
        (root / name).symlink_to(REPO / name)
    if SHARED.is_dir():
        tiny = root / "shared-datasets"
        for folder in SHARED.iterdir():
            if not list(folder.glob("*.jsonl")):
                (tiny / folder.name).parent.mkdir(parents=True, exist_ok=True)
                (tiny / folder.name).symlink_to(folder)
                continue
            (tiny / folder.name).mkdir(parents=True)
            for entry in folder.iterdir():
                if entry.suffix != ".jsonl":
                    (tiny / folder.name / entry.name).symlink_to(entry)
            for manifest in folder.glob("*.jsonl"):
                rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
                codes = set(list(dict.fromkeys(r.get("code") for r in rows))[:48])
                (tiny / folder.name / manifest.name).write_text(
                    "".join(json.dumps(r) + "\n" for r in rows if r.get("code") in codes))
    data = root / "data"
    url = f"sqlite:///{data / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=small_manifest, out=data / "index", database_url=url,
                      workers=0, progress=False))
    with running_service(micro_encoder, data / "index", url, timeout=300) as base:  # slow on a busy machine
        yield {"root": root, "base": base, "shared": root / "shared-datasets"}


def rewrite(command: str, base: str, key: str | None, shared: Path = SHARED) -> str:
    command = re.sub(r"^(\.venv/bin/)?python ", shlex.quote(sys.executable) + " ", command)
    command = command.replace("localhost:8000", base.removeprefix("http://"))
    command = command.replace("../shared/datasets/", f"{shared}/")
    for placeholder, value in PLACEHOLDERS.items():
        command = re.sub(rf"\b{placeholder}\b", value, command)
    if "lk_..." in command:
        assert key, "the block uses a key (lk_...) but no command before it created one"
        command = command.replace("lk_...", key)
    words = shlex.split(command)
    if words[0] == "curl":
        command += " --fail-with-body"
    elif words[2:3] == ["training"]:
        command += " " + " ".join(TINY[words[3]])
    return command


def runnable_blocks() -> list[Block]:
    return [b for b in readme_blocks(README.read_text()) if b.not_run is None]


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: f"README.md:{b.line}")
def test_readme_block_runs(block: Block, scratch):
    if shutil.which("curl") is None and any(kind(c) == "curl" for c in commands(block.text)):
        pytest.fail("curl is needed to run the README's curl lines")
    if "../shared/" in block.text and not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the README's commands read {SHARED}, which CI has beside the checkout")
        pytest.skip(f"{SHARED} is not there")
    key = None
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in commands(block.text):
        run = rewrite(command, scratch["base"], key, scratch["shared"])
        proc = subprocess.run(["bash", "-c", run], cwd=scratch["root"], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (f"README.md:{block.line}: `{command}` failed ({proc.returncode}):\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        if kind(command) == "keys" and " create " in f" {command} ":
            key = proc.stdout.strip().splitlines()[-1]
            assert key.startswith("lk_"), proc.stdout
        if kind(command) == "curl" and proc.stdout.strip():
            assert '"error"' not in proc.stdout, proc.stdout
