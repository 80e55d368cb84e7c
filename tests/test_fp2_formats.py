"""The two 2-bit formats: ``fp2`` (e1m0, 3 distinct values) and ``fp2_4level`` (the precision-comparison
seed's 4 levels {-1, 0, 1, 4}); learnable codebooks given as values, on weights and activations, in
footprints and in sweeps."""
import numpy as np
import pytest
import torch
from torch import nn

import lowbit
from lowbit import QuantSpec, quantize
from lowbit.formats import get_format
from lowbit.formats.tables import values as table_values
from lowbit.nn import LearnableCodebook, footprint, make_recipe, quantize_model

pytestmark = pytest.mark.usefixtures("eager_single_thread")
SEED_FP2 = [-1.0, 0.0, 1.0, 4.0]


def oracle_nearest(x: np.ndarray, vals) -> np.ndarray:
    """Slow reference: the nearest value, a tie to the even index (written independently of lowbit)."""
    out = np.empty_like(x)
    for i, v in enumerate(x.tolist()):
        d = [abs(v - c) for c in vals]
        best = min(d)
        ties = [k for k, dk in enumerate(d) if dk == best]
        out[i] = vals[next((k for k in ties if k % 2 == 0), ties[0])]
    return out


def test_fp2_is_e1m0_with_three_values_and_fp2_4level_has_four():
    fp2, four = get_format("fp2"), get_format("fp2_4level")
    assert fp2.name == "e1m0" and fp2.bits == 2 and fp2.n_codes == 4
    assert sorted(set(np.asarray(table_values(fp2)).tolist())) == [-2.0, 0.0, 2.0]
    assert four.bits == 2 and four.n_codes == 4 and list(four.points) == SEED_FP2
    assert np.asarray(table_values(four)).tolist() == SEED_FP2


def test_fp2_4level_bit_exact_against_oracle():
    four = get_format("fp2_4level")
    rng = np.random.default_rng(0)
    ties = [-0.5, 0.5, 2.5, -1.0, 0.0, 1.0, 4.0, -7.0, 9.0, 2.4999998, 2.5000002]
    x = np.concatenate([rng.uniform(-3, 6, 4000), ties]).astype(np.float32)
    spec = QuantSpec(four)                       # direct cast (the format's scaling 'none')
    got = quantize(torch.from_numpy(x), spec).numpy()
    want = oracle_nearest(x.astype(np.float64), SEED_FP2).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    enc = lowbit.encode(torch.from_numpy(x), spec)
    assert enc.codes.max() <= 3 and torch.equal(torch.tensor(SEED_FP2)[enc.codes.long()],
                                                torch.from_numpy(want))
    # every code round-trips; named ties go to the even index
    all_vals = torch.tensor(SEED_FP2)
    assert torch.equal(quantize(all_vals, spec), all_vals)
    assert quantize(torch.tensor([-0.5, 0.5, 2.5]), spec).tolist() == [-1.0, 1.0, 1.0]


def test_fp2_and_fp2_4level_differ_in_a_model():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    a = quantize(x, QuantSpec(get_format("fp2"), scaling="tensor"))
    b = quantize(x, QuantSpec(get_format("fp2_4level"), scaling="tensor"))
    assert len(a.unique()) == 3 and len(b.unique()) == 4 and not torch.equal(a, b)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


@pytest.mark.parametrize("fmt", ["codebook:-1,0,1,4", "fp2_4level"])
def test_learnable_codebook_values_footprint(fmt):
    """Regression: a learnable codebook given as values crashed footprint() ('tuple' not callable)."""
    m = _net()
    asg = quantize_model(m, make_recipe(weights=fmt, activations=fmt, learn_weight="codebook",
                                        learn_act="codebook"))
    fp = footprint(m, asg, (1, 1, 8, 8))
    # each weight: 2-bit indices + 4 fp32 values + one fp32 unit; biases at 32 bits
    want = (36 * 2 + 4 * 32 + 32) + (1440 * 2 + 4 * 32 + 32) + 32 * (4 + 10)
    assert fp.weight_bits == want
    gelu_rows = [r for r in fp.activation_rows if r["name"] == "1"]
    assert gelu_rows and gelu_rows[0]["bits"] == 2      # the GELU output counts at the codebook's bits


def test_learn_act_codebook_learns_the_activation_values():
    m = _net()
    quantize_model(m, make_recipe(activations="fp2_4level", learn_act="codebook"))
    cbs = [q for q in m.modules() if isinstance(q, LearnableCodebook)]
    assert len(cbs) == 1 and cbs[0].values.tolist() == SEED_FP2
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert cbs[0].values.tolist() != SEED_FP2       # the values moved: they are trained
    with pytest.raises(ValueError, match="learn_act='bogus'.*allowed: None, lsq, codebook"):
        make_recipe(activations="fp2", learn_act="bogus")


def test_sweep_keys_for_learnable_values_and_keep_first_last(tmp_path):
    from lowbit.experiments import expand
    from lowbit.experiments.schema import ConfigError, sweep_from_dict
    from lowbit.experiments.worker import build_run_model, load_run_data

    base = {"models": ["cnn"], "precisions": ["fp32", "fp2_4level"], "epochs": 1,
            "model_kwargs": {"cnn": {"channels": [4, 8]}}, "data": {"train_subset": 50}}
    plain = expand(sweep_from_dict(base))
    learn = expand(sweep_from_dict({**base, "learn_weight": "codebook", "learn_act": "codebook",
                                    "keep_first_last": True}))
    assert plain[0].run_id == learn[0].run_id          # fp32 ignores them
    assert plain[1].run_id != learn[1].run_id
    spec = learn[1]
    model, rows, cols, _ = build_run_model(spec, load_run_data(spec))
    cbs = [q for q in model.modules() if isinstance(q, LearnableCodebook)]
    assert cbs and all(q.values.tolist() == SEED_FP2 for q in cbs)
    fmts = [r["weight"] for r in rows if "weight" in r]
    assert fmts[0] is None and fmts[-1] is None and any(f for f in fmts)   # first/last kept fp32
    with pytest.raises(ConfigError, match="learn_weight: unknown learnable quantizer 'x'"):
        sweep_from_dict({**base, "learn_weight": "x"})
