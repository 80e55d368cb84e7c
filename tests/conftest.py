"""Shared helpers for the numerics tests: bitwise comparison and probe inputs.

The probe inputs are what a rounding routine can get wrong: every value of a format, every midpoint
between neighbours (the ties) and the fp32 numbers just above and below each midpoint, the overflow
tie past the largest value, the underflow tie below the smallest subnormal, signed zeros, Inf, NaN,
fp32 extremes, plus random fp32 numbers (random bit patterns and log-normal magnitudes).
Test modules import these helpers with ``from conftest import ...``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.formats.tables import values as table_values

F32 = np.float32
FP32_SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38,
                          2.0 ** -149, -(2.0 ** -149), 2.0 ** -126, 1.1754942e-38], dtype=F32)


def as_f32(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(a, dtype=F32))


def same_bits(a, b) -> np.ndarray:
    """Elementwise: identical fp32 bit patterns, or both NaN (any payload). -0 differs from +0."""
    a, b = as_f32(a), as_f32(b)
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def assert_same(actual, expected, inputs=None, what=""):
    """Bit-for-bit equality (NaN-aware); the message lists the first mismatches with their inputs."""
    a, e = as_f32(actual), as_f32(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    ok = same_bits(a, e)
    if not ok.all():
        bad = np.flatnonzero(~ok.reshape(-1))[:8]
        xin = as_f32(inputs).reshape(-1)[bad] if inputs is not None else None
        rows = [f"  x={xin[i]!r:>16} got={a.reshape(-1)[j]!r} want={e.reshape(-1)[j]!r}" if xin is not None
                else f"  [{j}] got={a.reshape(-1)[j]!r} want={e.reshape(-1)[j]!r}" for i, j in enumerate(bad)]
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} differ\n" + "\n".join(rows))


def f32_exact(pts) -> np.ndarray:
    """The float64 points that are exactly representable (and finite) in fp32, as fp32."""
    pts = np.asarray(pts, dtype=np.float64)
    with np.errstate(over="ignore"):
        p32 = pts.astype(F32)
    return p32[np.isfinite(p32) & (p32.astype(np.float64) == pts)]


def neighbours(p32) -> np.ndarray:
    """p32 plus the next fp32 number above and below each point."""
    return np.concatenate([p32, np.nextafter(p32, F32(np.inf)), np.nextafter(p32, F32(-np.inf))])


def probe_points(fmt) -> np.ndarray:
    """Every value, midpoint, overflow/underflow boundary of ``fmt`` and their fp32 neighbours, both signs."""
    v = table_values(fmt)
    mids = (v[1:] + v[:-1]) / 2
    pts = [v, mids]
    if fmt.kind == "float":
        top = v[-1] - v[-2]
        tiny = v[v > 0][0]
        pts.append(np.array([v[-1] + top / 2, v[-1] + top, 2 * v[-1], 4 * v[-1], tiny / 2, tiny / 4,
                             fmt.min_normal, fmt.min_normal / 2]))
    p = neighbours(f32_exact(np.concatenate(pts)))
    p = np.concatenate([p, -p, FP32_SPECIALS])
    return p


def rand_f32(n: int, seed: int = 0) -> np.ndarray:
    """n random fp32 numbers: half random bit patterns (any sign/exponent, some Inf/NaN), half
    randn * exp(randn * k) with k in {1, 4, 12} (magnitudes from tiny to huge)."""
    g = np.random.default_rng(seed)
    h = n // 2
    bits = g.integers(0, 2 ** 32, h, dtype=np.uint64).astype(np.uint32).view(F32)
    k = np.repeat(np.array([1.0, 4.0, 12.0]), -(-(n - h) // 3))[: n - h]
    with np.errstate(over="ignore"):
        ln = (g.standard_normal(n - h) * np.exp(g.standard_normal(n - h) * k)).astype(F32)
    return np.concatenate([bits, ln])


def t(a) -> torch.Tensor:
    """fp32 numpy -> torch (a copy, so tests never alias numpy buffers)."""
    return torch.from_numpy(np.array(a, dtype=F32))


# numpy warns about NaN/Inf arithmetic that the references do on purpose (NaN in, NaN out)
NUMPY_NAN_WARNINGS = [
    "ignore:invalid value encountered:RuntimeWarning",
    "ignore:overflow encountered:RuntimeWarning",
    "ignore:divide by zero encountered:RuntimeWarning",
]


@pytest.fixture
def eager_single_thread(monkeypatch):
    """Eager kernels (no torch.compile time) and one thread: for tests on tiny tensors, where on a
    shared 2-core machine two OpenMP threads made a tiny MobileNet's forward 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("LOWBIT_BACKEND", "eager")
    yield
    torch.set_num_threads(threads)


def train_steps(model, splits, steps=150):
    """A few Adam steps on random training batches (seeded): a small, reproducibly trained test model."""
    from lowbit.data import normalize
    x, y = normalize(splits.train.x, splits.mean, splits.std), splits.train.y
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def trained_digits_models():
    """(splits, calibration inputs, normalised test inputs, {"cnn", "mlp"}): the small trained models the
    ONNX tests export (cnn channels [8, 16, 16], ~91% test accuracy; mlp hidden [32])."""
    from lowbit.data import load_dataset, normalize
    from lowbit.models import create_model
    from lowbit.ptq import calibration_inputs
    splits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    cnn = train_steps(create_model("cnn", num_classes=10, in_chans=1, img_size=8, channels=[8, 16, 16]), splits, 40)
    torch.manual_seed(0)
    mlp = train_steps(create_model("mlp", num_classes=10, in_chans=1, img_size=8, hidden=[32]), splits, 150)
    xt = normalize(splits.test.x, splits.mean, splits.std)
    return splits, calibration_inputs(splits, 128), xt, {"cnn": cnn, "mlp": mlp}


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (the CPU is shared: no oversubscription), restored after.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, split with seed 0."""
    from lowbit.data import load_dataset
    return load_dataset("digits", seed=0)
