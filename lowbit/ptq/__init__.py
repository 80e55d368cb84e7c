"""Post-training quantization: calibration observers, fixed calibrated scales, bias correction, BN
folding, measured packed size and the W x A sweep behind ``lowbit ptq``.

    res = quantize_ptq(model, "int4", "int8", calib_x, PTQConfig(calib="kl", per_channel=True))
    acc = accuracy(res.model, splits); size = packed_size(res.model)["bytes"]
    rows = ptq_sweep(model, splits, ["int8", "int4"], ["int8", None], PTQConfig())

Files: observers (minmax / percentile / MSE / KL thresholds, fixed scales), calibrate
(PTQConfig, CalibratedQuantizer, quantize_ptq, fold_bn, bias correction), packed (encode + pack
sizes), sweep (rows, table, CSV). Models and checkpoints: :mod:`lowbit.cli.source`,
:mod:`lowbit.checkpoint`; the command ``lowbit ptq``: :mod:`lowbit.cli.ptq`.
"""
from .calibrate import CalibratedQuantizer, PTQConfig, PTQResult, fold_bn, ptq_recipe, quantize_ptq
from .observers import METHODS, hist_threshold, weight_scale
from .packed import packed_size, weight_codes
from .sweep import (accuracy, calibration_inputs, format_table, layer_costs, ptq_sweep, recipe_rows, select_row,
                    write_csv)

__all__ = ["CalibratedQuantizer", "METHODS", "PTQConfig", "PTQResult", "accuracy", "calibration_inputs", "fold_bn",
           "format_table", "hist_threshold", "layer_costs", "packed_size", "ptq_recipe", "ptq_sweep", "quantize_ptq",
           "recipe_rows", "select_row", "weight_codes", "weight_scale", "write_csv"]
