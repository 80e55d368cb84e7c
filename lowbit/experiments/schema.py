"""Sweep configuration: typed, frozen, validated; parsed from YAML with ``--set`` overrides.

A sweep file is one mapping. Grid keys take a list (or a single value) and expand as a product;
every other key is one value applied to all runs::

    name: demo
    models: [cnn, vit]              # grid: model x activation x dataset x precision
    activations: [relu, gelu]       #       x softmax precision x quantize x augmentation x seed
    precisions: [fp32, fp8_e4m3, fp4_e2m1]
    epochs: 5
    model_kwargs: {cnn: {channels: [16, 32]}}
    data: {train_subset: 500}

Every error is a :class:`ConfigError` with one line naming the key, the bad value and what is
allowed, e.g. ``models[1]: unknown model 'resnet'; allowed: cnn, deit_tiny, ...``.
"""
from __future__ import annotations

import dataclasses
import re
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lowbit.ops.backend import BACKENDS as QUANT_BACKENDS  # declared once, in lowbit.ops
from lowbit.train import AMP_MODES, DEVICES, OPTIMIZERS, TrainConfig

GRID_KEYS = ("models", "activations", "datasets", "precisions", "softmax_precisions", "quantize",
             "augmentations", "amps", "seeds")
QUANTIZE_TARGETS = ("weights", "activations")  # the default
try:  # every target lowbit.nn's recipe_for_precision understands
    from lowbit.nn.presets import TARGETS as ALL_TARGETS
except ImportError:
    ALL_TARGETS = ("weights", "inputs", "activations", "softmax", "attention", "grads")
try:
    from lowbit.nn.specs import LEARN_ACT, LEARN_WEIGHT
except ImportError:
    LEARN_WEIGHT, LEARN_ACT = ("lsq", "codebook"), ("lsq", "codebook")
SOFTMAX_SAME = "same"  # softmax in the run's own precision
DEFAULT_THREADS = 1  # torch threads per run unless the config says otherwise (never the executor's)
RESOURCE_KEYS = ("cpus", "gpus")  # per-run resources a cluster executor reserves (lowbit.experiments.executors)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """An invalid sweep configuration; ``str(err)`` is one line meant for the user."""


@dataclass(frozen=True)
class DataConfig:
    """How each run loads its dataset (``lowbit.data.load_dataset``).

    ``split_seed`` fixes the train/val/test split across run seeds, so seeds vary only the
    initialisation, order and augmentation. ``train_subset`` / ``eval_subset`` keep at most that
    many samples of train / of val and test each (a fixed random subset drawn with
    ``split_seed``), for quick runs. ``root`` is the directory of file-based datasets.
    ``resize``: resize every image to this many pixels a side (bilinear, before augmentation;
    :func:`lowbit.data.resize_splits`) and build the model for that input size, e.g. 224 for a
    ViT made for 224 x 224 inputs; null keeps the dataset's size. ``on_bad_file`` (imagefolder): ``skip`` an unreadable image with a warning in the run's log, or
    fail the run with an ``error`` naming it.
    """

    root: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None
    eval_subset: int | None = None
    on_bad_file: str = "skip"
    resize: int | None = None

    def __post_init__(self):
        if self.on_bad_file not in ("skip", "error"):
            raise ConfigError(f"data.on_bad_file: expected one of skip, error, got {self.on_bad_file!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction: expected a number in [0, 1), "
                              f"got {self.val_fraction!r}")
        for key in ("train_subset", "eval_subset", "resize"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key}: expected null or an int >= 1, got {value!r}")


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: grid keys (tuples, expanded as a product) plus settings shared by all runs.

    ``softmax_precisions``: ``null`` keeps softmax in float, a format name quantizes it, ``same``
    uses the run's precision. ``quantize``: the targets of the precision, ``[weights,
    activations]`` (one setting) or a list of such lists (a grid axis). ``patience``: early
    stopping on validation accuracy (``null`` = off). ``out_dir`` defaults to ``runs/<name>``.
    ``quant_backend``: lowbit's fake-quant kernels (``with lowbit.backend(...)`` around each run):
    ``auto`` runs the native CPU kernels where they apply and compiles for large tensors elsewhere
    (seconds of compilation per run process); ``eager``, ``compiled`` and ``native`` force one.
    Backends agree bit for bit, so it is not part of the run id. ``threads``: the torch intra-op
    threads of every run (``torch.set_num_threads``; default 1, whatever the executor). A thread
    count changes how reductions are split, so the last bits of a result: it is part of the run id,
    and local ``-j N``, Ray and a resumed run give the same bits for one id. ``amps``: mixed-precision
    training modes (a grid axis: ``off``, ``fp16``, ``bf16``, ``auto``; :mod:`lowbit.train_amp`),
    part of the run id and of every result row (column ``amp``). ``augmentation_kwargs``: options
    of every preset, and per preset under its name (``{flip: false, extended: {degrees: 15}}``).
    ``exclude``: grid points left out, each a mapping of grid keys to a value or a list of values
    (``[{precisions: [fp8_e4m3], amps: [fp16, bf16]}]`` drops fp8 runs with AMP); a run is left out
    when it matches every key of one entry. ``checkpoint_every``: keep ``checkpoint_epoch_N.pt``
    every N epochs in each run folder (``lowbit run CONFIG --resume FILE`` restarts a run from one). ``resources``: what each run reserves on a cluster executor (``{cpus: 1, gpus: 0}``;
    ``lowbit run --executor ray``); the local executor ignores it. Not part of the run id either.
    """

    name: str = "sweep"
    description: str = ""
    out_dir: str | None = None
    models: tuple[str, ...] = ("cnn",)
    activations: tuple[str, ...] = ("relu",)
    datasets: tuple[str, ...] = ("digits",)
    precisions: tuple[str, ...] = ("fp32",)
    softmax_precisions: tuple[str | None, ...] = (None,)
    quantize: tuple[tuple[str, ...], ...] = (QUANTIZE_TARGETS,)
    augmentations: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] = (0,)
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False     # SGD: plain momentum unless true
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    patience: int | None = None
    amps: tuple[str, ...] = ("off",)
    device: str = "cpu"
    eval_batch_size: int = 512
    checkpoint_every: int | None = None
    quant_backend: str = "auto"
    threads: int = DEFAULT_THREADS
    keep_first_last: bool = False
    learn_weight: str | None = None
    learn_act: str | None = None
    augmentation_kwargs: dict[str, Any] = field(default_factory=dict)
    exclude: tuple[dict[str, Any], ...] = ()
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    resources: dict[str, float] = field(default_factory=lambda: {"cpus": 1.0, "gpus": 0.0})

    def __post_init__(self):
        validate_names(self)
        if self.threads < 1:
            raise ConfigError(f"threads: expected an int >= 1 (torch threads per run), "
                              f"got {self.threads!r}")
        for key, value in self.resources.items():
            _choice("resources", key, list(RESOURCE_KEYS), "resource")
            if value < 0:
                raise ConfigError(f"resources.{key}: expected a number >= 0, got {value!r}")
        try:
            self.train_config(seed=0, augmentation="none", amp="off")
        except ValueError as err:
            raise ConfigError(str(err)) from None

    @property
    def results_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")

    def train_config(self, seed: int, augmentation: str, amp: str = "off") -> TrainConfig:
        keys = {f.name for f in dataclasses.fields(TrainConfig)} - {
            "seed", "augmentation", "amp", "augmentation_kwargs"}
        return TrainConfig(seed=seed, augmentation=augmentation, amp=amp,
                           augmentation_kwargs=self.augmentation_options(augmentation),
                           **{k: getattr(self, k) for k in keys})

    def augmentation_options(self, preset: str) -> dict[str, Any]:
        """``augmentation_kwargs`` for ``preset``: the shared keys, then the preset's own mapping
        (a key named after a preset, e.g. ``{flip: false, extended: {degrees: 15}}``) over them."""
        presets = _augmentation_names()
        shared = {k: v for k, v in self.augmentation_kwargs.items() if k not in presets}
        own = self.augmentation_kwargs.get(preset, {})
        return {**shared, **own} if preset != "none" else {}

    def to_dict(self) -> dict:
        """Plain YAML/JSON-ready dict (lists, not tuples)."""
        return _plain(dataclasses.asdict(self))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _choice(key: str, value: str, allowed: list[str], what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def validate_names(cfg: SweepConfig) -> None:
    """Check every name against its registry; raise ConfigError naming key, value and choices."""
    from lowbit.data import get_augmentation, list_augmentations, list_datasets
    from lowbit.formats import get_format
    from lowbit.models import get_activation, list_activations, list_models

    for key in GRID_KEYS:
        if not getattr(cfg, key):
            raise ConfigError(f"{key}: expected at least one value, got an empty list")
    for i, name in enumerate(cfg.models):
        if name.startswith("timm:"):
            _check_timm(f"models[{i}]", name, cfg)
            continue
        _choice(f"models[{i}]", name, list_models(), "model")
    for i, name in enumerate(cfg.activations):
        try:
            get_activation(name)
        except ValueError:
            _choice(f"activations[{i}]", name, list_activations(), "activation")
    for i, name in enumerate(cfg.datasets):
        _choice(f"datasets[{i}]", name, list_datasets(), "dataset")
    for i, name in enumerate(cfg.augmentations):
        _choice(f"augmentations[{i}]", name, list_augmentations(), "augmentation")
        try:
            if name != "none":
                get_augmentation(name, 32, 3, **cfg.augmentation_options(name))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"augmentation_kwargs: {name}: {err}") from None
    for name, value in cfg.augmentation_kwargs.items():
        if name in list_augmentations() and not isinstance(value, dict):
            raise ConfigError(f"augmentation_kwargs.{name}: expected a mapping of {name}'s options, got {value!r}")
    for i, mode in enumerate(cfg.amps):
        _choice(f"amps[{i}]", mode, list(AMP_MODES), "amp mode")
    _check_exclude(cfg)
    for key, values in (("precisions", cfg.precisions),
                        ("softmax_precisions", cfg.softmax_precisions)):
        for i, name in enumerate(values):
            if name is None or (key == "softmax_precisions" and name == SOFTMAX_SAME):
                continue
            try:
                if key == "precisions" and name.startswith("recipe:"):
                    from lowbit.experiments.precision import load_recipe_precision
                    load_recipe_precision(name)
                else:
                    get_format(name)
            except ValueError as err:
                raise ConfigError(f"{key}[{i}]: {err}") from None
    for i, targets in enumerate(cfg.quantize):
        for name in targets:
            _choice(f"quantize[{i}]", name, list(ALL_TARGETS), "quantize target")
    for key, allowed in (("learn_weight", LEARN_WEIGHT), ("learn_act", LEARN_ACT)):
        value = getattr(cfg, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}: unknown learnable quantizer {value!r}; allowed: null, {', '.join(allowed)}")
    for name in cfg.model_kwargs:
        if name.startswith("timm:") and name in cfg.models:
            continue
        _choice("model_kwargs", name, list_models(), "model")
        _check_model_kwargs(name, cfg.model_kwargs[name])
    for key, allowed in (("optimizer", OPTIMIZERS), ("device", DEVICES),
                         ("quant_backend", QUANT_BACKENDS)):
        _choice(key, getattr(cfg, key), list(allowed), key)
    if not cfg.name or any(c in cfg.name for c in "/\\"):
        raise ConfigError(f"name: expected a non-empty name without slashes, got {cfg.name!r}")


def _check_timm(key: str, name: str, cfg: SweepConfig) -> None:
    """A ``timm:<arch>`` model: timm importable, the architecture known, the activations its own."""
    from lowbit.models.timm_models import ACT_DEFAULT, timm_module
    try:
        timm = timm_module()
    except ImportError as err:
        raise ConfigError(f"{key}: {name!r}: {err}") from None
    if name[len("timm:"):] not in timm.list_models():
        raise ConfigError(f"{key}: unknown timm architecture {name[5:]!r}; allowed: timm.list_models()")
    for act in cfg.activations:
        if act not in ACT_DEFAULT:
            raise ConfigError(f"activations: {act!r} with {name!r}; timm models keep their own activation, "
                              f"allowed: {', '.join(ACT_DEFAULT)}")


def _augmentation_names() -> set[str]:
    from lowbit.data import list_augmentations
    return set(list_augmentations())


class ConfigWarning(UserWarning):
    """A config setting that is valid but has no effect on this sweep (printed as one line by the CLI)."""


def _check_exclude(cfg: SweepConfig) -> None:
    """Each ``exclude`` entry names grid keys only. A value that is not in the sweep's own list for
    that key (a ``--set`` slice took it out, or a typo) matches no run: a :class:`ConfigWarning` names
    it, and one more says so when the whole entry can no longer match any run."""
    for i, entry in enumerate(cfg.exclude):
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"exclude[{i}]: expected a non-empty mapping of grid keys to values, got {entry!r}")
        live = True
        for key, value in entry.items():
            _choice(f"exclude[{i}]", key, [k for k in GRID_KEYS if k != "quantize"], "grid key")
            values = value if isinstance(value, list) else [value]
            if key == "amps":
                for v in values:
                    _choice(f"exclude[{i}].amps", v, list(AMP_MODES), "amp mode")
            allowed = list(getattr(cfg, key))
            missing = [v for v in values if v not in allowed]
            if missing:
                warnings.warn(f"exclude[{i}].{key}: {', '.join(map(str, missing))} not in this sweep's "
                              f"{key} ({', '.join(map(str, allowed))}); matches no run", ConfigWarning,
                              stacklevel=2)
            live = live and len(missing) < len(values)
        if not live:
            warnings.warn(f"exclude[{i}] matches no run of this sweep; it leaves every run in",
                          ConfigWarning, stacklevel=2)


def excluded(cfg: SweepConfig, point: dict) -> bool:
    """Whether the grid point (grid key -> value, as written in the config) matches an ``exclude`` entry."""
    for entry in cfg.exclude:
        if all(point[k] in (v if isinstance(v, list) else [v]) for k, v in entry.items()):
            return True
    return False


def _check_model_kwargs(name: str, kwargs) -> None:
    """Build model ``name`` with ``kwargs`` on the meta device (no memory, no time), 3x32x32 in and
    10 classes, so a wrong key or value fails here with one line, not in every run."""
    import torch

    from lowbit.models import create_model
    if not isinstance(kwargs, dict):
        raise ConfigError(f"model_kwargs.{name}: expected a mapping of options, got {kwargs!r}")
    try:
        with torch.device("meta"):
            create_model(name, **kwargs)
    except Exception as err:  # noqa: BLE001 - a constructor may raise anything on a bad value
        why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ConfigError(f"model_kwargs.{name}: {kwargs!r} does not build model {name!r} ({why}); "
                          f"allowed: the options of lowbit.models.{name}") from None


# --- parsing: raw dict -> typed values ----------------------------------------------------------

def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(key: str, value, tp):
    """Check ``value`` against annotation ``tp``; lists become tuples, ints become floats."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is tuple:  # tuple[X, ...]: a list, or one value standing for a one-item list
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(items))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if tp is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}.get(tp, isinstance(value, tp))
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return float(value) if tp is float else value


def _normalize_quantize(value):
    """``weights`` / ``[weights, activations]`` are one setting; a list of lists is a grid axis."""
    if value is None or value == []:
        return [[]]
    if isinstance(value, str):
        return [[value]]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [list(value)]
    return value


def _yaml_off(value):
    """YAML 1.1 reads a bare ``off`` as false: in AMP modes it means the mode "off"."""
    if isinstance(value, list):
        return [_yaml_off(v) for v in value]
    return "off" if value is False else value


def _build(cls, raw: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if cls is SweepConfig and key == "amp":
            raise ConfigError(f"amp: the AMP mode is the grid key amps (a list); got amp: {raw[key]!r}, "
                              f"write amps: [{raw[key]}] (allowed modes: {', '.join(AMP_MODES)})")
        if key not in names:
            where = prefix.rstrip(".") or "config"
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(names))}")
    values = {}
    for key, value in raw.items():
        if cls is SweepConfig and key == "quantize":
            value = _normalize_quantize(value)
        if cls is SweepConfig and key == "amps":
            value = _yaml_off(value)
        if cls is SweepConfig and key == "exclude" and isinstance(value, list):
            value = [{k: _yaml_off(v) if k == "amps" else v for k, v in e.items()}
                     if isinstance(e, dict) else e for e in value]
        values[key] = _coerce(prefix + key, value, hints[key])
    return cls(**values)


def sweep_from_dict(raw: dict | None) -> SweepConfig:
    """Validate a raw mapping (e.g. from YAML) into a :class:`SweepConfig`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    return _build(SweepConfig, raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings (value parsed as YAML; dotted keys reach into mappings)."""
    raw = dict(raw or {})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: cannot parse {text!r} as YAML ({err})") from None
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def load_sweep(path: str | Path | None = None, overrides: list[str] = ()) -> SweepConfig:
    """Read ``path`` (YAML; None = the built-in default sweep), apply overrides, validate."""
    if path is None:
        from lowbit.experiments.defaults import DEFAULT_SWEEP
        raw = dict(DEFAULT_SWEEP)
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"config: cannot read {str(path)!r}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"config: {str(path)!r} is not a text file (byte {err.object[err.start]:#04x} "
                              f"at offset {err.start} is not UTF-8); allowed: a YAML sweep config") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            msg = " ".join(str(err).split())
            raise ConfigError(f"config: {str(path)!r} is not valid YAML: {msg}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    return sweep_from_dict(apply_overrides(raw or {}, list(overrides)))
