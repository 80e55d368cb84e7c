"""The measured allocation peak of a training step: it counts real tensors, varies with the model and
with fake quantization, and reaches the results tables."""
import pytest
import torch
from torch import nn

from lowbit.experiments.memory import AllocationCounter, step_peak_bytes

pytestmark = pytest.mark.usefixtures("eager_single_thread")


def test_counter_counts_new_storages_not_views_and_frees():
    a = torch.ones(1000)                       # made before the mode: not counted
    with AllocationCounter() as c:
        b = a * 2                              # 4000 bytes
        v = b.view(10, 100)                    # a view: nothing new
        a.add_(1)                              # in place on an outside tensor: nothing new
        d = torch.empty(500, dtype=torch.float64)   # 4000 bytes
        assert c.current == 8000 and c.peak == 8000
        del b, v
        assert c.current == 4000
        e = torch.zeros(250)                   # 1000 bytes: below the earlier peak
        assert c.peak == 8000 and c.current == 5000
    del d, e


def test_step_peak_grows_with_width_and_with_fake_quantization():
    from lowbit.nn import make_recipe, quantize_model
    x, y = torch.randn(16, 64), torch.randint(0, 4, (16,))

    def net(width):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 4))
    small, wide = step_peak_bytes(net(32), x, y), step_peak_bytes(net(512), x, y)
    # the gradients alone of the wide net's first weight are 64 * 512 * 4 bytes
    assert small > 16 * 32 * 4 and wide > small + 64 * 512 * 4
    q = net(512)
    quantize_model(q, make_recipe(weights="fp4_e2m1", activations="fp4_e2m1"))
    assert step_peak_bytes(q, x, y) > wide     # fake quantization holds fp32 copies and temporaries
    m = net(32)
    before = [p.detach().clone() for p in m.parameters()]
    step_peak_bytes(m, x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters()))   # the model is untouched


def test_sweep_results_carry_alloc_peak(tmp_path):
    from lowbit.experiments import load_sweep, run_sweep
    from lowbit.report.tables import comparison_table
    cfg = load_sweep(None, [f"out_dir={tmp_path}", "models=[cnn]", "activations=[relu]",
                            "precisions=[fp32, fp4_e2m1]", "epochs=1", "model_kwargs.cnn.channels=[4, 8]",
                            "data.train_subset=64", "data.eval_subset=64"])
    runs = run_sweep(cfg, jobs=1, quiet=True)
    assert (runs["alloc_peak_mb"] > 0).all()
    fp32, fp4 = runs.set_index("precision")["alloc_peak_mb"][["fp32", "fp4_e2m1"]]
    assert fp4 > fp32
    table = comparison_table(runs)
    assert float(table.loc["Allocated per step, peak (MiB)", "fp4_e2m1"]) > 0
