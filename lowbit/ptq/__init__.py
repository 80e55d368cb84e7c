"""Post-training quantization: calibration observers, fixed calibrated scales, bias correction, BN
folding, measured packed size and the W x A sweep behind ``lowbit ptq``.

    res = quantize_ptq(model, "int4", "int8", calib_x, PTQConfig(calib="kl", per_channel=True))
    acc = accuracy(res.model, splits); size = packed_size(res.model)["bytes"]
    rows = ptq_sweep(model, splits, ["int8", "int4"], ["int8", None], PTQConfig())

Files: observers (minmax / percentile / MSE / KL thresholds, fixed scales), calibrate
(PTQConfig, CalibratedQuantizer, quantize_ptq, fold_bn, bias correction), packed (encode + pack
sizes), sweep (rows, table, CSV), checkpoint (models, checkpoints, quick training), cli.
"""
from .calibrate import CalibratedQuantizer, PTQConfig, PTQResult, fold_bn, ptq_recipe, quantize_ptq
from .checkpoint import build_model, load_into, load_state_dict, train_quick
from .observers import METHODS, hist_threshold, weight_scale
from .packed import packed_size, weight_codes
from .sweep import (accuracy, calibration_inputs, format_table, layer_costs, ptq_sweep, recipe_rows, select_row,
                    write_csv)


def cli_ptq(argv=None) -> int:
    """``lowbit ptq ...`` (see :mod:`lowbit.ptq.cli`)."""
    from .cli import cli_ptq as run
    return run(argv)


__all__ = ["CalibratedQuantizer", "METHODS", "PTQConfig", "PTQResult", "accuracy", "build_model",
           "calibration_inputs", "cli_ptq", "fold_bn", "format_table", "hist_threshold", "load_into",
           "layer_costs", "load_state_dict", "packed_size", "recipe_rows", "select_row", "ptq_recipe", "ptq_sweep", "quantize_ptq", "train_quick", "weight_codes",
           "weight_scale", "write_csv"]
