"""Measured onnxruntime latency of an exported graph (CPU execution provider, graph optimizations on).

``ort_latency(path, x, runs)``: one warm-up run, then ``runs`` timed runs of the whole batch ``x``;
the median wall time in milliseconds (``time.perf_counter``). Threads: ``threads`` intra-op threads
(default 1, so the figure does not depend on what else the machine runs).
"""
from __future__ import annotations

import statistics
import time

import torch


def ort_latency(path, x: torch.Tensor, runs: int = 10, threads: int = 1) -> float:
    """Median milliseconds of ``runs`` onnxruntime runs of ``x`` through the graph at ``path``."""
    import onnxruntime as ort
    if runs < 1:
        raise ValueError(f"latency runs {runs} is not allowed; allowed: an integer >= 1")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {"input": x.float().numpy()}
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def compare_latency(quant_path, fp32_path, x: torch.Tensor, runs: int = 10) -> dict:
    """{"quant_ms", "fp32_ms", "speedup"} of the quantized graph against the fp32 graph on ``x``."""
    q, f = ort_latency(quant_path, x, runs), ort_latency(fp32_path, x, runs)
    return {"quant_ms": q, "fp32_ms": f, "speedup": f / q if q > 0 else float("inf")}
