"""Sweep options of the MobileNet study: plain-momentum SGD by default (nesterov an option)."""
import torch
from torch import nn

from lowbit.experiments import expand
from lowbit.experiments.schema import sweep_from_dict
from lowbit.train import TrainConfig, make_optimizer


def test_sgd_is_plain_momentum_by_default_and_nesterov_is_an_option():
    model = nn.Linear(4, 2)
    plain = make_optimizer(model, TrainConfig(optimizer="sgd"))
    assert plain.defaults["momentum"] == 0.9 and plain.defaults["nesterov"] is False
    nest = make_optimizer(model, TrainConfig(optimizer="sgd", nesterov=True))
    assert nest.defaults["nesterov"] is True
    # the option changes the numerics: two steps from the same start differ
    outs = []
    for n in (False, True):
        torch.manual_seed(0)
        m = nn.Linear(4, 2)
        opt = make_optimizer(m, TrainConfig(optimizer="sgd", lr=0.1, nesterov=n))
        for _ in range(2):
            opt.zero_grad()
            m(torch.ones(3, 4)).square().sum().backward()
            opt.step()
        outs.append(m.weight.detach().clone())
    assert not torch.equal(*outs)


def test_sweep_nesterov_default_and_run_ids():
    base = {"optimizer": "sgd", "model_kwargs": {"cnn": {"channels": [4, 8]}}}
    a = expand(sweep_from_dict(base))[0]
    b = expand(sweep_from_dict({**base, "nesterov": True}))[0]
    assert a.train.nesterov is False and b.train.nesterov is True and a.run_id != b.run_id
    # AdamW ignores nesterov: its run id does not depend on it
    c = expand(sweep_from_dict({"optimizer": "adamw"}))[0]
    d = expand(sweep_from_dict({"optimizer": "adamw", "nesterov": True}))[0]
    assert c.run_id == d.run_id
