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
