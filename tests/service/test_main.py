"""``python -m service`` in a real process: uvicorn on a free port, and clean refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.conftest import REPO, _free_port


def service_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", *args]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    return {**e, "HF_HUB_OFFLINE": "1"}


def test_serves_over_http(live_server, built_index, sample_png):
    with httpx.Client(base_url=live_server, timeout=30) as http:
        assert http.get("/healthz").json()["count"] == built_index["count"]
        hits = http.post("/v1/search/text", json={"query": "dog", "k": 4}).json()["results"]
        assert len(hits) == 4
        r = http.post("/v1/search/image", files={"file": ("q.png", sample_png.read_bytes(), "image/png")})
        assert r.json()["results"][0]["source"] == sample_png.name
        assert http.get(hits[0]["image_url"]).content == open(hits[0]["metadata"]["file"], "rb").read()
        bad = http.post("/v1/search/text", json={"query": " "})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "empty_query"
        assert http.get("/").status_code == 200


def test_mismatched_encoder_exits_2_with_one_line(built_index, tmp_path):
    from safetensors.torch import load_file

    from training.encoder import Preprocess, read_metadata, save_encoder

    meta = read_metadata(built_index["encoder"])
    weights = {k: v + 1e-3 for k, v in load_file(built_index["encoder"]).items() if v.is_floating_point()}
    weights.update({k: v for k, v in load_file(built_index["encoder"]).items() if not v.is_floating_point()})
    other = tmp_path / "other.safetensors"
    save_encoder(other, kind="clip", arch=meta["arch"], state_dict=weights, preprocess=Preprocess(**meta["preprocess"]),
                 dim=meta["dim"], tokenizer=meta["tokenizer"])
    proc = subprocess.run(
        service_cmd("--encoder", str(other), "--index", str(built_index["index"]),
                    "--database-url", built_index["database_url"], "--port", str(_free_port())),
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "mismatch" in errors[0] and meta["fingerprint"] in errors[0]


def test_missing_configuration_exits_2(tmp_path):
    proc = subprocess.run(service_cmd("--index", str(tmp_path)), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no encoder configured" in proc.stderr and "LOOKALIKE_ENCODER" in proc.stderr
