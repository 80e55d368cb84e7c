"""``lowbit export packed``: a model's weights quantized and saved truly packed (codes + scales).

    lowbit export packed --train-quick --model cnn --weights int4 --out model.lowbit.safetensors --verify

Prints the file size next to the cost model's storage figure (library: :mod:`lowbit.export.packed`).
"""
from __future__ import annotations

import copy
import sys

import torch

from lowbit.cli.common import add_command, check_out, tensor_format
from lowbit.cli.source import add_backend_arg, add_source_args, build_model, load_source


def add_parser(sub):
    p = add_command(sub, "packed", run, "bit-packed safetensors checkpoint", (
        "Quantize a model's weights and save them truly packed (codes + scales) in a .safetensors file; "
        "prints the file size next to the cost model's storage figure."),
        errors=(ValueError, OSError, TypeError))
    add_source_args(p)
    p.add_argument("--weights", default="int4", help="weight format (default int4)")
    p.add_argument("--per-channel", action="store_true", help="calibrated per-channel weight scales (PTQ)")
    add_backend_arg(p)
    p.add_argument("--out", default="model.lowbit.safetensors", help="output file")
    p.add_argument("--verify", action="store_true", help="load the file into a fresh model and compare")
    return p


def run(args) -> int:
    from lowbit.export.packed import cost_bytes, load_packed, save_packed
    from lowbit.nn import quantize_model
    from lowbit.nn.modules import QuantLayer
    from lowbit.ptq import ptq_recipe

    wname = tensor_format("--weights", args.weights)
    out = check_out(args.out, kind="file")
    src = load_source(args, out.parent, need_data=False)
    qmodel = copy.deepcopy(src.model).eval()
    quantize_model(qmodel, ptq_recipe(wname, None, "channel" if args.per_channel else None))
    info = save_packed(qmodel, out)
    cb = cost_bytes(qmodel, src.input_shape)
    print(f"packed {src.name} weights={wname} -> {out}")
    print(f"  file size        {info.file_bytes} bytes (fp32 parameters: {info.fp32_bytes} bytes; "
          f"packed parameters {info.fp32_bytes / max(info.params_bytes, 1):.2f}x smaller)")
    print(f"  = header         {info.header_bytes} bytes (JSON index + metadata)")
    print(f"  + parameters     {info.params_bytes} bytes (packed codes + scales + other parameters)")
    print(f"  + buffers        {info.buffer_bytes} bytes (BatchNorm statistics etc., not in the cost model)")
    print(f"  cost model       {cb:g} bytes (lowbit.cost weight_bytes); parameters - cost = "
          f"{info.params_bytes - cb:g} bytes (byte padding of {info.packed_tensors} packed tensors)")
    if args.verify:
        torch.manual_seed(args.seed + 1)
        fresh = build_model(src.name, src.dataset, src.model_kwargs, src.activation, src.splits)
        load_packed(out, fresh)
        same = all(torch.equal(dict(fresh.named_parameters())[f"{n}.weight"], m.weight_quantizer(m.weight))
                   for n, m in qmodel.named_modules() if isinstance(m, QuantLayer) and m.weight_quantizer is not None)
        print(f"  verify           loaded into a fresh model: quantized weights bit-exact: {same}; "
              f"{len(dict(qmodel.named_parameters()))} parameters")
    return 0


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["export", "packed", *(sys.argv[1:] if argv is None else argv)])
