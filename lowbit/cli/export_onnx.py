"""``lowbit export onnx``: post-training quantize a model and export it as an ONNX QDQ graph.

    lowbit export onnx --train-quick --model cnn --dataset digits --weights int8 --acts int8 --out model.onnx

Runs the file in onnxruntime and prints the max |difference| to the fake-quantized PyTorch model and
the accuracies (library: :mod:`lowbit.export.onnx`). Formats ONNX cannot express: a one-line error.
"""
from __future__ import annotations

import sys

import torch

from lowbit.cli.common import UsageError, add_command, check_out, optional_format, positive
from lowbit.cli.source import add_backend_arg, add_calib_args, add_source_args, load_source


def add_parser(sub):
    from lowbit.export.onnx import ALLOWED, LAYOUTS
    p = add_command(sub, "onnx", run, "ONNX QDQ graph, checked in onnxruntime", (
        "Post-training quantize a model (calibrated fixed scales, lowbit.ptq) and export it to ONNX with "
        "QuantizeLinear/DequantizeLinear nodes; runs it in onnxruntime and prints the max |difference| to the "
        f"fake-quantized PyTorch model and both test accuracies. Formats: {ALLOWED}."),
        errors=(ValueError, OSError, TypeError, ImportError))
    add_source_args(p)
    p.add_argument("--weights", default="int8", help=f"weight format ({ALLOWED}; none = fp32)")
    p.add_argument("--acts", default="int8", help=f"activation format of every layer input ({ALLOWED}; none)")
    p.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales")
    p.add_argument("--calib", default="minmax", help="activation observer (lowbit.ptq METHODS)")
    add_calib_args(p)
    add_backend_arg(p)
    p.add_argument("--out", default="model.onnx", help="output .onnx file")
    p.add_argument("--layout", default="deploy", choices=LAYOUTS, help="deploy: BatchNorm folded, Q/DQ around each "
                   "quantized op, int32 bias (onnxruntime fuses integer kernels); simulate: Q/DQ only at layer inputs")
    p.add_argument("--exporter", default="auto", choices=("auto", "graph", "torch"), help="graph: lowbit's "
                   "hand-built graph (CNNs, MLPs); torch: torch.onnx.export with lowbit's scales as Q/DQ (transformers; "
                   "int8/uint8); auto: graph, else torch when the model has a layer the graph has no rule for")
    p.add_argument("--latency-runs", type=int, default=10, help="timed onnxruntime runs of the quantized and the "
                   "fp32 graph (median printed; 0 = skip; the fp32 graph goes to OUT with suffix .fp32.onnx)")
    return p


def _fmt(flag, text):
    from lowbit.export.onnx import check_format
    name = optional_format(flag, text)
    if name is not None:
        check_format(name, flag)
    return name


def run(args) -> int:
    from lowbit.data import normalize
    from lowbit.export.onnx import compare_onnx, export_onnx, run_onnx
    from lowbit.ptq import PTQConfig, calibration_inputs, quantize_ptq

    w, a = _fmt("--weights", args.weights), _fmt("--acts", args.acts)
    if w is None and a is None:
        raise UsageError("nothing to quantize; allowed: --weights and/or --acts set to a format")
    positive("--calib-samples", args.calib_samples)
    positive("--latency-runs", args.latency_runs, 0)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the packages onnx and onnxruntime ({exc}); pip install onnx onnxruntime")
    out = check_out(args.out, kind="file")
    cfg = PTQConfig(calib=args.calib, calib_samples=args.calib_samples, per_channel=args.per_channel)
    src = load_source(args, out.parent)
    model, splits = src.model, src.splits
    if args.layout == "deploy":
        from lowbit.export.onnx_deploy import fold_batchnorm
        model = fold_batchnorm(model)   # before quantizing: the fake-quant model is the folded one
    calib = calibration_inputs(splits, args.calib_samples, args.seed)
    res = quantize_ptq(model, w, a, calib, cfg)
    xt = normalize(splits.test.x, splits.mean, splits.std)
    info = _export(res.model, out, args, xt[:1], calib)
    c = compare_onnx(out, info.model, xt, splits.test.y)
    with torch.no_grad():
        acc_f = float((model(xt).argmax(1) == splits.test.y).float().mean())
    try:  # best effort: onnxruntime's QDQ graph rewrites reject some valid graphs (int4 before MaxPool)
        pred = run_onnx(out, xt, optimize=True).argmax(1)
        acc_opt = f"{100 * float((pred == splits.test.y).float().mean()):.2f}%"
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        acc_opt = f"not run: {' '.join(str(exc).split())[:160]}"
    nodes = ", ".join(f"{k} {v}" for k, v in info.nodes.items())
    print(f"exported {src.name} weights={w or 'fp32'} acts={a or 'fp32'} -> {out} (opset {info.opset}; {nodes})")
    print(f"onnxruntime vs fake-quantized PyTorch on {len(xt)} {src.dataset} test samples: max |diff| "
          f"{c['max_abs_diff']:.3g} (outputs up to {c['ref_max_abs']:.3g}; {100 * c['frac_exact']:.2f}% of samples "
          f"within 1e-4), argmax agreement {100 * c['argmax_agree']:.2f}%")
    print(f"accuracy: fp32 {100 * acc_f:.2f}%  fake-quant PyTorch {100 * c['acc_torch']:.2f}%  "
          f"onnxruntime {100 * c['acc_onnx']:.2f}% (graph optimizations on: {acc_opt})")
    if args.latency_runs:
        _print_latency(model, out, args, xt)
    return 0


def _export(qmodel, out, args, example, calib):
    from lowbit.export.onnx import UnsupportedOpError, export_onnx
    from lowbit.export.onnx_traced import export_onnx_traced
    if args.exporter == "torch":
        return export_onnx_traced(qmodel, out, example, calib_x=calib)
    try:
        return export_onnx(qmodel, out, example, calib_x=calib, layout=args.layout)
    except UnsupportedOpError as exc:
        if args.exporter == "graph":
            raise
        print(f"hand-built graph: {exc}; exporting through torch.onnx.export", file=sys.stderr)
        return export_onnx_traced(qmodel, out, example, calib_x=calib)


def _print_latency(model, out, args, xt):
    from lowbit.export.onnx import UnsupportedOpError, export_onnx
    from lowbit.export.onnx_latency import compare_latency
    fp32 = out.with_suffix(".fp32.onnx")
    try:
        export_onnx(model, fp32, xt[:1], layout=args.layout)
    except UnsupportedOpError:
        from lowbit.export.onnx_traced import export_onnx_traced
        export_onnx_traced(model, fp32, xt[:1])
    lat = compare_latency(out, fp32, xt, args.latency_runs)
    print(f"onnxruntime latency (CPU, 1 thread, batch {len(xt)}, median of {args.latency_runs} runs, optimizations "
          f"on): quantized {lat['quant_ms']:.3f} ms, fp32 {lat['fp32_ms']:.3f} ms ({fp32}): "
          f"{lat['speedup']:.2f}x")


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["export", "onnx", *(sys.argv[1:] if argv is None else argv)])
