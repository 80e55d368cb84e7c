"""QAT training-step cost: lowbit (and Brevitas, where installed) against the plain FP32 step.

One step = forward + cross-entropy + backward + SGD step of the zoo ``cnn`` on a batch of 64
32x32x3 images on the CPU. Configurations (weights and activation-function outputs quantized,
``recipe_for_precision(fmt)``): int8 and fp8_e4m3 (W8A8), fp4_e2m1 and mxfp4 (W4A4). Every model
starts from the same weights. Warm-up steps (lowbit compiles its kernels on first use; Brevitas
collects activation statistics, shortened here to 2 steps so its steady state is timed) are not
timed; then the configurations are timed in interleaved rounds (one step of each per round), so
that load from other processes hits all of them alike, and the median step time is reported with
its ratio to FP32. Goals: W8A8 <= 1.15x FP32, FP4 / MXFP4 <= 1.3x; printed as PASS / MISS.

    python benchmarks/qat_step.py                 # full run
    python benchmarks/qat_step.py --quick         # smoke test (batch 8, eager kernels, 2 steps)
    python benchmarks/qat_step.py --profile int8  # torch.profiler table of one lowbit step
    python benchmarks/qat_step.py --isa v3        # one ISA level only (default: every level this CPU runs)

Per ISA level (``--isa``, default ``all``: every x86-64 level the CPU runs) the step runs in a child
process whose lowbit kernels, ATen and Inductor are built for that level (see isa_levels.py), and
prints its table and ``GOAL [level]`` lines; the goal lines of every level are repeated at the end.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import isa_levels  # noqa: E402

if __name__ == "__main__":
    isa_levels.enter_from_argv(sys.argv[1:])   # a one-level run: that level's environment before torch starts

import torch  # noqa: E402
import torch.nn.functional as F
from torch import nn  # noqa: E402

from lowbit.models import create_model
from lowbit.nn import quantize_model, recipe_for_precision  # noqa: E402

CONFIGS = {"int8": ("W8A8", 1.15), "fp8_e4m3": ("W8A8", 1.15), "fp4_e2m1": ("W4A4", 1.3), "mxfp4": ("W4A4", 1.3)}


def lowbit_model(base: nn.Module, fmt: str) -> nn.Module:
    model = copy.deepcopy(base)
    quantize_model(model, recipe_for_precision(fmt))
    return model


def _brevitas_quants(fmt):
    """(weight quantizer, activation quantizer, activation extra kwargs) for a format, or None."""
    from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
    from brevitas.quant.float_quant_ocp import (Fp8e4m3OCPActPerTensorFloat, Fp8e4m3OCPWeightPerTensorFloat,
                                                FpOCPActPerTensorFloat, FpOCPWeightPerTensorFloat)
    from brevitas.quant.mx_quant_ocp import MXFloat8e4m3Act, MXFloat8e4m3Weight
    fp4 = dict(bit_width=4, exponent_bit_width=2, mantissa_bit_width=1)
    return {
        "int8": (Int8WeightPerTensorFloat, Uint8ActPerTensorFloat.let(collect_stats_steps=2)),
        "fp8_e4m3": (Fp8e4m3OCPWeightPerTensorFloat, Fp8e4m3OCPActPerTensorFloat.let(collect_stats_steps=2)),
        "fp4_e2m1": (FpOCPWeightPerTensorFloat.let(**fp4), FpOCPActPerTensorFloat.let(collect_stats_steps=2, **fp4)),
        "mxfp4": (MXFloat8e4m3Weight.let(**fp4), MXFloat8e4m3Act.let(group_dim=1, **fp4)),
    }[fmt]


def brevitas_model(base: nn.Module, fmt: str) -> nn.Module:
    """The same network built from Brevitas layers (QuantConv2d, QuantReLU, QuantLinear)."""
    import brevitas.nn as qnn
    wq, aq = _brevitas_quants(fmt)
    model = copy.deepcopy(base)
    for parent in list(model.modules()):
        for name, m in list(parent.named_children()):
            if type(m) is nn.Conv2d:
                q = qnn.QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                    groups=m.groups, bias=m.bias is not None, weight_quant=wq)
            elif type(m) is nn.Linear:
                q = qnn.QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, weight_quant=wq)
            elif type(m) is nn.ReLU:
                q = qnn.QuantReLU(act_quant=aq)
            else:
                continue
            q.load_state_dict(m.state_dict(), strict=False)
            setattr(parent, name, q)
    return model


def make_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def build(args):
    torch.manual_seed(0)
    base = create_model("cnn", num_classes=10, in_chans=3, img_size=32).train()
    models = {"fp32": base}
    for fmt in CONFIGS:
        models[f"lowbit {fmt}"] = lowbit_model(base, fmt)
    try:
        import brevitas  # noqa: F401
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fmt in CONFIGS:
                try:
                    models[f"brevitas {fmt}"] = brevitas_model(base, fmt)
                except Exception as e:  # an API difference in another Brevitas version: report, go on
                    print(f"brevitas {fmt}: n/a ({type(e).__name__}: {str(e)[:80]})")
    except ImportError:
        print("brevitas: n/a (not installed)")
    return models


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    models = build(args)
    steps = {k: make_step(m, x, y) for k, m in models.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        for k, s in steps.items():
            for _ in range(args.warmup):
                s()
        print(f"warm-up ({args.warmup} steps each, includes kernel compilation): {time.perf_counter() - t0:.1f} s")
        times = {k: [] for k in steps}
        for _ in range(args.steps):
            for k, s in steps.items():
                t = time.perf_counter()
                s()
                times[k].append(time.perf_counter() - t)
    report(times, args)


def report(times, args):
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["fp32"]
    print(f"\ncnn, batch {args.batch} x 3x32x32, {torch.get_num_threads()} threads, median of {args.steps} "
          f"interleaved steps")
    print(f"{'config':<20} {'step ms':>9} {'min ms':>9} {'x FP32':>7}  goal")
    for k, v in times.items():
        ratio = med[k] / base
        goal = ""
        if k.startswith("lowbit"):
            label, limit = CONFIGS[k.split()[1]]
            verdict = "not judged (--quick)" if args.quick else ("PASS" if ratio <= limit else "MISS")
            goal = f"{label} <= {limit:.2f}x: {verdict}"
        print(f"{k:<20} {med[k] * 1e3:9.1f} {min(v) * 1e3:9.1f} {ratio:7.2f}  {goal}")
    for fmt in CONFIGS:
        if f"brevitas {fmt}" not in times:
            print(f"{'brevitas ' + fmt:<20} {'n/a':>9}")
    tag = f"[{args.level}] " if args.level else ""
    for label, limit in sorted(set(CONFIGS.values())):
        got = [(k.split()[1], med[k] / base) for k in med if k.startswith("lowbit") and CONFIGS[k.split()[1]][0] == label]
        if not got:
            continue
        verdict = "not judged (--quick)" if args.quick else ("PASS" if all(r <= limit for _, r in got) else "MISS")
        print(f"GOAL {tag}{label} <= {limit:.2f}x FP32 step: {verdict} ("
              + ", ".join(f"{f} {r:.2f}x" for f, r in got) + ")")


def profile(args):
    """Where a lowbit step's time goes: torch.profiler, sorted by self CPU time."""
    from torch.profiler import profile as tprofile
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = create_model("cnn").train()
    model = lowbit_model(base, args.profile)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    step = make_step(model, x, y)
    for _ in range(args.warmup):
        step()
    with tprofile() as p:
        for _ in range(3):
            step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: batch 8, eager kernels, 1 warm-up and 2 timed steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--backend", choices=("auto", "eager", "compiled"),
                    help="lowbit kernel backend (sets LOWBIT_BACKEND; default: auto)")
    ap.add_argument("--profile", metavar="FORMAT", help="profile one lowbit configuration instead")
    ap.add_argument("--isa", nargs="+", default=["all"], choices=isa_levels.CHOICES, metavar="LEVEL",
                    help="x86-64 ISA levels to run at, one table each: all (default), native, v2, v3, v4")
    args = ap.parse_args(argv)
    code, level = isa_levels.run_levels(__file__, argv, args.isa, ap.error)
    if code is not None:
        return code
    args.level = level
    print(f"ISA level {args.level}: {isa_levels.describe_run(args.level)}")
    if args.backend:
        os.environ["LOWBIT_BACKEND"] = args.backend
    if args.quick:  # eager kernels: no compile time; the timings then say nothing about the goals
        os.environ["LOWBIT_BACKEND"] = "eager"
        args.batch, args.steps, args.warmup = 8, 2, 1
    profile(args) if args.profile else run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
