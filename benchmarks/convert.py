"""Memory and latency of ``lowbit.nn.convert``'s integer layers against fp32 and the fake-quantized model.

Models: the zoo ``mlp`` and ``cnn`` (32x32x3 inputs) and, if ``transformers`` is installed, a small
BERT built from a config (no weights downloaded; 4 layers, hidden 256, sequence length 128). Recipes:

    w8a8  weights int8 (per channel) + layer inputs int8 (dynamic per tensor) -> onednn-int8
    w8    weights int8 only                                                 -> int8-weight (Linear)
    w4    weights int4 only (per channel)                                   -> int4-weight (Linear)

(layers a recipe cannot convert, e.g. convolutions with an fp32 input, stay fake-quantized and are
counted in the ``kept`` column). Memory is ``state_dict`` bytes (``lowbit.nn.state_bytes``).
Latency: median of ``--reps`` forward passes under ``torch.inference_mode``, fp32 / fake / converted
timed in interleaved rounds (one pass of each per round, so that load from other processes hits all
alike), at batch 1 and a larger batch, with ``--threads`` torch threads (default 1).

    python benchmarks/convert.py            # full run
    python benchmarks/convert.py --quick    # smoke test (mlp only, 2 reps)
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

import isa_levels  # noqa: E402  (benchmarks/: the CPU's name)
from lowbit.models import create_model
from lowbit.nn import ConvertWarning, convert, make_recipe, quantize_model, state_bytes

RECIPES = {"w8a8": dict(weights="int8", inputs="int8"), "w8": dict(weights="int8"), "w4": dict(weights="int4")}


def isa() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    extra = [f for f in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f" {f}" in flags]
    return f"{torch.backends.cpu.get_cpu_capability()} ({', '.join(extra) or 'no VNNI/AMX'})"


def bert(quick: bool):
    """(model, input maker) of a small BERT from a config, or None without transformers."""
    try:
        import transformers
    except ImportError:
        return None
    cfg = transformers.BertConfig(hidden_size=256, num_hidden_layers=2 if quick else 4, num_attention_heads=4,
                                  intermediate_size=1024, vocab_size=30522, max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    return model, lambda b: torch.randint(0, cfg.vocab_size, (b, 32 if quick else 128))


def models(quick: bool):
    """(name, model, input maker, large batch)."""
    torch.manual_seed(0)
    out = [("mlp", create_model("mlp").eval(), lambda b: torch.randn(b, 3, 32, 32), 8 if quick else 256)]
    if quick:
        return out
    out.append(("cnn", create_model("cnn").eval(), lambda b: torch.randn(b, 3, 32, 32), 64))
    hf = bert(quick)
    if hf is not None:
        out.append(("bert", hf[0], hf[1], 8))
    return out


def timed(variants: dict, x, reps: int) -> dict:
    """Median seconds per forward of each variant, interleaved rounds after one warm-up pass each."""
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for m in variants.values():
            m(x)
        for _ in range(reps):
            for k, m in variants.items():
                t = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def run(args):
    torch.set_num_threads(args.threads)
    print(f"CPU: {isa_levels.cpu_name()}; ISA: {isa()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"quantized engine {torch.backends.quantized.engine}")
    head = (f"{'model':5} {'recipe':6} {'kernels':27} {'kept':>4} {'fp32 MB':>8} {'conv MB':>8} {'mem x':>6}  "
            f"{'batch':>5} {'fp32 ms':>8} {'fake ms':>8} {'conv ms':>8} {'x fp32':>7} {'x fake':>7}")
    print(head)
    print("-" * len(head))
    for name, base, make_x, big in models(args.quick):
        for rname in args.recipes:
            fake = copy.deepcopy(base)
            quantize_model(fake, make_recipe(**RECIPES[rname]))
            conv = copy.deepcopy(fake)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvertWarning)
                report = convert(conv, conv.__dict__["_lowbit_assignment"])
            kinds = sorted({r.kernel for r in report.converted})
            kernels = ",".join(f"{k}:{sum(r.kernel == k for r in report.rows)}" for k in kinds) or "-"
            mem = (state_bytes(base), state_bytes(conv))
            for b in (1, big):
                x = make_x(b)
                t = timed({"fp32": base, "fake": fake, "conv": conv}, x, args.reps)
                print(f"{name:5} {rname:6} {kernels:27} {len(report.kept):>4} {mem[0] / 1e6:8.2f} {mem[1] / 1e6:8.2f} "
                      f"{mem[1] / mem[0]:6.3f}  {b:>5} {t['fp32'] * 1e3:8.3f} {t['fake'] * 1e3:8.3f} "
                      f"{t['conv'] * 1e3:8.3f} {t['conv'] / t['fp32']:7.2f} {t['conv'] / t['fake']:7.2f}")
    print("mem x: converted state_dict bytes / fp32 (the fake-quantized model stores the fp32 weights: 1.0x); "
          "x fp32, x fake: converted latency / that model's")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: mlp only, small batch, 2 reps")
    ap.add_argument("--reps", type=int, default=None, help="timed rounds per batch size (default 30; --quick 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 30
    if args.reps < 1 or args.threads < 1:
        ap.error(f"--reps and --threads must be >= 1 (got {args.reps}, {args.threads})")
    run(args)


if __name__ == "__main__":
    main()
