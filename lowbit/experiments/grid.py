"""Grid expansion: a :class:`SweepConfig` becomes a list of :class:`RunSpec`, one per run.

A run id is the first 10 hex digits of the SHA-256 of the run's canonical JSON (sorted keys, no
whitespace; the sweep name and the quantization backend, which do not change results, excluded),
so the same run gets the same id in any sweep and a re-run finds its folder. Changing anything that
affects the run (epochs, lr, a model kwarg, the torch thread count) changes it.

The thread count joined the id after lowbit 0.1.0's first sweeps (before, a run took whatever threads its executor
gave it, so one id could hold different bits): :attr:`RunSpec.legacy_id` is the id the same run had
before, which the runner uses to say which old run folders are not reused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from lowbit.experiments.precision import RECIPE, resolve_precision
from lowbit.experiments.schema import (DEFAULT_THREADS, GRID_KEYS, SOFTMAX_SAME, DataConfig, SweepConfig,
                                      excluded)
from lowbit.train import TrainConfig

FP32 = "fp32"
NOT_HASHED = ("sweep", "quant_backend")
QUANT_OPTIONS = {"keep_first_last": False, "learn_weight": None, "learn_act": None}  # hashed unless default


@dataclass(frozen=True)
class RunSpec:
    """One fully resolved run: the grid point, its training config, model kwargs and data."""

    model: str
    activation: str
    dataset: str
    precision: str
    softmax_precision: str | None
    quantize: tuple[str, ...]
    train: TrainConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    sweep: str = ""
    quant_backend: str = "auto"
    threads: int = DEFAULT_THREADS
    world_size: int = 1  # data-parallel ranks (lowbit.experiments.ddp); 1: one process
    keep_first_last: bool = False
    learn_weight: str | None = None
    learn_act: str | None = None

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def label(self) -> str:
        soft = f"/sm:{self.softmax_precision}" if self.softmax_precision else ""
        amp = f"/amp:{self.train.amp}" if self.train.amp != "off" else ""
        return f"{self.model}/{self.activation}/{self.precision}{soft}{amp}"

    def to_dict(self) -> dict:
        """JSON-ready nested dict; :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["quantize"] = list(self.quantize)
        d["train"]["augmentation_kwargs"] = dict(self.train.augmentation_kwargs)
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        d = dict(d)
        d["train"] = TrainConfig(**d["train"])
        d["data"] = DataConfig(**d["data"])
        d["quantize"] = tuple(d["quantize"])
        return cls(**d)

    @property
    def run_id(self) -> str:
        return _digest(self, NOT_HASHED)

    @property
    def legacy_id(self) -> str:
        """The id this run had before the thread count was part of it (old run folders)."""
        return _digest(self, NOT_HASHED + ("threads",))


def _digest(spec: RunSpec, skip: tuple[str, ...]) -> str:
    canon = {k: v for k, v in spec.to_dict().items() if k not in skip}
    if canon.get("world_size") == 1:  # one process: the ids of single-process runs stay
        del canon["world_size"]
    if canon["data"].get("on_bad_file") == "skip":  # the default: ids of older sweeps stay
        canon["data"] = {k: v for k, v in canon["data"].items() if k != "on_bad_file"}
    if canon["data"].get("resize", 0) is None:  # the default: ids of older sweeps stay
        canon["data"] = {k: v for k, v in canon["data"].items() if k != "resize"}
    # how often checkpoints are kept does not change results (and keeps ids of older sweeps)
    canon["train"] = {k: v for k, v in canon["train"].items() if k != "checkpoint_every"}
    if canon["train"]["optimizer"] != "sgd":  # nesterov only acts on SGD: hash it as the old
        canon["train"]["nesterov"] = True    # default True, so ids of older AdamW sweeps stay
    for key, default in QUANT_OPTIONS.items():  # at their defaults: ids of older sweeps stay
        if canon.get(key) == default:
            del canon[key]
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def expand(cfg: SweepConfig, world_size: int = 1) -> list[RunSpec]:
    """All runs of ``cfg`` in grid order (model slowest, seed fastest), duplicates removed.

    ``world_size``: the data-parallel ranks each run trains on (a DDP run is a run of its own,
    with its own id; 1, one process, keeps the single-process ids).

    Grid points matching an ``exclude`` entry are left out. For ``fp32`` the quantize targets are cleared (nothing to quantize) so a ``quantize`` grid
    axis does not repeat the fp32 baseline; ``softmax: same`` resolves to the run's precision
    (None for fp32).
    """
    runs: dict[str, RunSpec] = {}
    for point in itertools.product(*(getattr(cfg, k) for k in GRID_KEYS)):
        if excluded(cfg, dict(zip(GRID_KEYS, point))):
            continue
        model, act, dataset, prec, soft, targets, aug, amp, seed = point
        prec = resolve_precision(prec)
        if soft == SOFTMAX_SAME:
            soft = None if prec == FP32 else prec
        options = {} if prec == FP32 else {k: getattr(cfg, k) for k in QUANT_OPTIONS}
        spec = RunSpec(model=model, activation=act, dataset=dataset, precision=prec,
                       softmax_precision=soft, quantize=() if prec == FP32 else tuple(targets), **options,
                       train=cfg.train_config(seed=seed, augmentation=aug, amp=amp),
                       model_kwargs=dict(cfg.model_kwargs.get(model, {})), data=cfg.data,
                       sweep=cfg.name, quant_backend=cfg.quant_backend, threads=cfg.threads,
                       world_size=world_size)
        runs.setdefault(spec.run_id, spec)
    return list(runs.values())


DERIVED = ("sweep", "run_id", "precision_format", "precision_bits")  # not axes of their own


def describe(specs: list[RunSpec]) -> list[str]:
    """One line per run: id, ``model/activation/precision[/sm:...]``, dataset, then ``key=value`` for
    every other setting that differs between the runs (quantize target, augmentation, seed, a train
    option...), so no two lines look alike (``lowbit run --dry-run``)."""
    rows = [flatten(s) for s in specs]
    shown = {"model", "activation", "precision", "softmax_precision", "dataset", *DERIVED}
    def differs(k):  # model_kwargs count only where they differ for one model
        by = (lambda r: r["model"]) if k == "model_kwargs" else (lambda r: "")
        seen: dict = {}
        for r in rows:
            seen.setdefault(by(r), set()).add(json.dumps(r[k], sort_keys=True, default=str))
        return any(len(v) > 1 for v in seen.values())
    keys = [k for k in (rows[0] if rows else {}) if k not in shown and differs(k)]
    if "seed" not in keys:
        keys.append("seed")
    return [" ".join([s.run_id, s.label, s.dataset] + [f"{k}={r[k]}" for k in keys])
            for s, r in zip(specs, rows)]


def flatten(spec: RunSpec) -> dict:
    """The run's config as flat columns (kwargs as JSON text) for a results row."""
    t = spec.train
    row = {"sweep": spec.sweep, "run_id": spec.run_id, "model": spec.model,
           "activation": spec.activation, "dataset": spec.dataset, "precision": spec.precision,
           "precision_format": _format_name(spec.precision),
           "precision_bits": _bits(spec.precision),
           "softmax_precision": spec.softmax_precision or "none",
           "quantize": "+".join(spec.quantize) or "none", "augmentation": t.augmentation,
           "seed": t.seed}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in row:
            value = getattr(t, f.name)
            row[f.name] = json.dumps(dict(value), sort_keys=True) if isinstance(value, dict) \
                else value
    row["model_kwargs"] = json.dumps(spec.model_kwargs, sort_keys=True)
    row["quant_backend"] = spec.quant_backend
    row["threads"] = spec.threads
    row["world_size"] = spec.world_size
    for key in QUANT_OPTIONS:
        row[key] = getattr(spec, key)
    for f in dataclasses.fields(DataConfig):
        row[f"data_{f.name}"] = getattr(spec.data, f.name)
    return row


def _format_name(name: str) -> str:
    if name.startswith(RECIPE):
        return "recipe"
    from lowbit.formats import get_format
    return get_format(name).name


def _bits(name: str) -> float:
    if name.startswith(RECIPE):
        return float("nan")  # mixed precision: see the footprint columns
    from lowbit.formats import get_format
    fmt = get_format(name)
    return float(getattr(fmt, "bits_per_element", None) or fmt.bits)
