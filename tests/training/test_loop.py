import json
import math

import pytest
import torch

from training.loop import cosine_with_warmup, param_groups


def test_cosine_schedule_warms_up_then_decays_to_zero():
    f = cosine_with_warmup(warmup=4, total=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.5)
    assert f(14) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(4, 15)]
    assert values == sorted(values, reverse=True)


def test_no_weight_decay_on_gains_biases_and_temperature():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10)))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 4  # linear bias, LN weight, LN bias, logit_scale


class _Regression:
    """The smallest method: fit y = 3x with one weight."""

    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)

    def training_step(self, batch):
        (x,) = batch
        return {"loss": ((self.model(x) - 3 * x) ** 2).mean()}


def test_logged_rows_go_to_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from training.loop import LoopConfig, Trainer

    torch.manual_seed(0)
    batches = ([torch.randn(8, 1)] for _ in range(100))
    cfg = LoopConfig(steps=12, lr=0.1, warmup_steps=1, log_every=4, progress=False,
                     tensorboard_dir=str(tmp_path / "tb"))
    history = Trainer(_Regression(), cfg, torch.device("cpu"), log_file=tmp_path / "log.jsonl").fit(batches)

    assert [row["step"] for row in history] == [1, 4, 8, 12]
    assert all(math.isfinite(row["loss"]) for row in history)
    jsonl = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert jsonl == history
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"loss", "lr", "elapsed_s"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [s for s, _ in logged] == [1, 4, 8, 12]
    assert [v for _, v in logged] == pytest.approx([row["loss"] for row in history], rel=1e-6)
