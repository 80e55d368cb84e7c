"""Where a command's model and data come from: the one source every command shares.

Flags (:func:`add_source_args`), with the same meaning in every command:

``--checkpoint FILE|RUN``
    trained weights (:mod:`lowbit.checkpoint`: lowbit.train's ``best.pt`` / ``checkpoint.pt``, a state
    dict, ``.safetensors``; lowbit's key names or torchvision's ResNet / timm's ViT-DeiT layout, renamed by
    :mod:`lowbit.models.external`), or a folder holding ``model.pt``, ``best.pt`` or ``checkpoint.pt`` (first
    found): a ``lowbit run`` run folder, or the ``--out`` folder of a command that ran ``--train-quick``.
    A provenance file beside the weights (``model.yaml`` written by ``--train-quick``, a sweep run's
    ``config.yaml``) supplies ``--model``, ``--model-kwargs``, ``--activation`` and ``--dataset``
    when they are not given.
``--train-quick``
    train the zoo model first, always the same way: :func:`lowbit.train.train` with AdamW, lr 3e-3,
    weight decay 1e-4, batch 64, cosine schedule, ``--epochs`` (default 5) and ``--seed``; deep
    transformers (``deit_tiny``: :data:`QUICK_BY_MODEL`) lr 1e-3 with one warm-up epoch before the
    cosine, weight decay 0.05, gradient clipping at 1, batch 32; without
    ``--model-kwargs`` the model has the built-in sweep's small size (e.g. cnn channels [16, 32, 32]).
    The run folder ``OUT/train_quick/MODEL-HASH`` resumes or reuses an earlier training with the same
    settings; the final weights go to ``OUT/model.pt`` with their provenance in ``OUT/model.yaml``
    (OUT: the command's output folder, the folder of ``--out`` where that is a file).
``--model NAME``, ``--model-kwargs YAML``, ``--activation NAME``
    the zoo model, its options as a YAML mapping (JSON is YAML too: ``'{"channels": [8, 16]}'`` and
    ``'{channels: [8, 16]}'`` both work) and its activation function (default: the model's own).
``--dataset NAME``, ``--data-root DIR``, ``--seed N``
    the dataset (default digits), the folder of its files (default ``$LOWBIT_DATA``), and the seed of
    the model initialisation, training, data split and calibration subset.
``--calib-samples N`` (:func:`add_calib_args`)
    calibration samples: a seeded random subset of the training split, normalised as in training.
``--backend NAME`` (:func:`add_backend_arg`)
    the fake-quant kernels: the command runs inside ``with lowbit.backend(NAME):``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from lowbit.cli.common import UsageError, positive

RUN_FILES = ("model.pt", "best.pt", "checkpoint.pt")
PROVENANCE_FILES = ("model.yaml", "config.yaml")
QUICK = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 64}
# deep transformers do not learn at QUICK's lr without warm-up (DeiT-Tiny on digits: 10.9 % test, chance
# 10 %): a lower lr, 1 warm-up epoch, then cosine, gradient clipping, batch 32 (69.6 % after 5 epochs;
# python benchmarks/train_quick_deit.py measures both)
QUICK_BY_MODEL = {"deit_tiny": {"lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 1.0, "grad_clip": 1.0,
                                "batch_size": 32}}
QUICK_EPOCHS = 5
TRAIN_QUICK_HELP = ("train the model first (AdamW lr 3e-3, batch 64, cosine; deit_tiny lr 1e-3 after a 1-epoch "
                    "warm-up, batch 32; --epochs, at the built-in sweep's small "
                    "size unless --model-kwargs); weights and provenance go to OUT/model.pt, OUT/model.yaml")
# (in_chans, img_size, num_classes) of the registered datasets, so that cost estimates need no data files
KNOWN_SHAPES = {"digits": (1, 8, 10), "mnist-small": (1, 28, 10), "mnist": (1, 28, 10),
                "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def add_source_args(p, *, train_quick: bool = True) -> None:
    """--checkpoint [| --train-quick --epochs], --model, --model-kwargs, --activation, --dataset,
    --data-root, --seed (see the module docstring)."""
    g = p.add_argument_group("model and data (lowbit.cli.source)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="FILE|RUN", help="trained weights: a checkpoint file or a run folder")
    if train_quick:
        src.add_argument("--train-quick", action="store_true", help=TRAIN_QUICK_HELP)
        g.add_argument("--epochs", type=int, default=QUICK_EPOCHS,
                       help=f"--train-quick epochs (default {QUICK_EPOCHS})")
    g.add_argument("--model", default=None, help="zoo model name (default: the checkpoint's provenance, else cnn)")
    g.add_argument("--model-kwargs", default=None, metavar="YAML",
                   help="YAML (or JSON) mapping of model options, e.g. '{channels: [16, 32, 32]}'")
    g.add_argument("--activation", default=None, help="activation function of the model (default: its own)")
    g.add_argument("--dataset", default=None, help="dataset name (default: the checkpoint's provenance, else digits)")
    g.add_argument("--data-root", default=None, metavar="DIR", help="folder of the dataset files (default $LOWBIT_DATA)")
    g.add_argument("--seed", type=int, default=0, help="seed of model init, training, data split and calibration")


def add_calib_args(p, default: int = 256) -> None:
    p.add_argument("--calib-samples", type=int, default=default,
                   help=f"calibration samples from the train split (default {default})")


def add_backend_arg(p, default: str | None = None) -> None:
    """--backend: the fake-quant kernels the command runs under (:func:`lowbit.backend`, one scoped choice)."""
    from lowbit.ops.backend import BACKENDS
    p.add_argument("--backend", default=default, help=f"quantize kernels: {', '.join(BACKENDS)} (default "
                   f"{default or 'LOWBIT_BACKEND, else auto'}: auto = the native CPU kernels where they apply); "
                   "all agree bit for bit")


def parse_model_kwargs(text: str | None) -> dict:
    """``--model-kwargs`` YAML (JSON is YAML) -> dict; a one-line UsageError otherwise."""
    if not text:
        return {}
    import yaml
    try:
        kw = yaml.safe_load(text)
    except yaml.YAMLError:
        kw = None
    if not isinstance(kw, dict):
        raise UsageError(f"--model-kwargs {text!r} is not allowed; allowed: a YAML (or JSON) mapping such as "
                         f"'{{channels: [16, 32, 32]}}'")
    return kw


def quick_model_kwargs(name: str) -> dict:
    """The small size of model ``name`` that the built-in sweep uses (``lowbit run``), else {}."""
    from lowbit.experiments.defaults import DEFAULT_SWEEP
    return dict(DEFAULT_SWEEP.get("model_kwargs", {}).get(name, {}))


def dataset_shape(name: str, splits=None) -> tuple[int, int, int]:
    """(in_chans, img_size, num_classes) of dataset ``name`` (from ``splits`` when given)."""
    if splits is not None:
        return splits.in_chans, splits.img_size, splits.num_classes
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    from lowbit.data import load_dataset
    s = load_dataset(name)
    return s.in_chans, s.img_size, s.num_classes


def build_model(name: str, dataset: str, model_kwargs: dict | None = None, activation: str | None = None,
                splits=None):
    """A fresh zoo model shaped for ``dataset`` (seed before calling for a fixed initialisation)."""
    from lowbit.models import create_model
    c, size, k = dataset_shape(dataset, splits)
    kw = dict(model_kwargs or {}, **({"act": activation} if activation else {}))
    try:
        return create_model(name, num_classes=k, in_chans=c, img_size=size, **kw)
    except TypeError as exc:
        raise UsageError(f"model {name!r} does not accept {kw}: {exc}") from None


def quick_settings(name: str | None = None) -> dict:
    """The TrainConfig fields ``--train-quick`` uses for zoo model ``name`` (:data:`QUICK`, with
    :data:`QUICK_BY_MODEL`'s warm-up schedule for deep transformers)."""
    return {**QUICK, **QUICK_BY_MODEL.get(name, {})}


def train_quick(model, splits, epochs: int = QUICK_EPOCHS, seed: int = 0, run_dir=None, name: str | None = None) -> dict:
    """Train ``model`` (zoo model ``name``) on ``splits`` the ``--train-quick`` way; resumes/reuses ``run_dir``."""
    from lowbit.train import TrainConfig, train
    return train(model, splits, TrainConfig(epochs=epochs, seed=seed, **quick_settings(name)), run_dir=run_dir)


def resolve_checkpoint(path) -> tuple[Path, dict]:
    """(weights file, provenance dict or {}) of ``--checkpoint`` (a file or a run folder)."""
    p = Path(path)
    if p.is_dir():
        found = next((p / n for n in RUN_FILES if (p / n).is_file()), None)
        if found is None:
            raise UsageError(f"--checkpoint {str(path)!r} is a folder without {', '.join(RUN_FILES)}; allowed: a "
                             f"checkpoint file or a run folder holding one")
        p = found
    import yaml
    for name in PROVENANCE_FILES:
        meta = p.parent / name
        if meta.is_file() and (name != "model.yaml" or p.name == "model.pt"):
            try:
                info = yaml.safe_load(meta.read_text())
            except (OSError, yaml.YAMLError):
                info = None
            if isinstance(info, dict) and isinstance(info.get("model"), str):
                return p, info
    return p, {}


@dataclasses.dataclass
class Source:
    """The model a command works on, with the data and where both came from."""
    model: object
    splits: object
    name: str
    dataset: str
    model_kwargs: dict
    activation: str | None
    checkpoint: str          # the weights file, or "train-quick"

    @property
    def input_shape(self) -> tuple:
        c, size, _ = dataset_shape(self.dataset, self.splits)
        return (1, c, size, size)

    def meta(self) -> dict:
        return {"model": self.name, "model_kwargs": json.dumps(self.model_kwargs, sort_keys=True),
                "checkpoint": self.checkpoint}


def load_source(args, out_folder=None, *, need_data: bool = True, required: bool = True,
                check=None) -> Source:
    """The model of ``args`` (see the module docstring), in eval mode, and the dataset's splits
    (None when ``need_data`` is False and nothing is trained). ``out_folder``: where --train-quick writes.
    ``check(model, input_shape)`` runs on the built model before any weights are loaded or trained
    (e.g. the C export refusing layers it cannot express)."""
    quick = getattr(args, "train_quick", False)
    if required and not args.checkpoint and not quick:
        raise UsageError("no model given; allowed: --checkpoint PATH or --train-quick "
                         "(PATH: a checkpoint file or a run folder)")
    if quick:
        positive("--epochs", args.epochs)
    file, info = resolve_checkpoint(args.checkpoint) if args.checkpoint else (None, {})
    name = args.model or info.get("model") or "cnn"
    if args.model_kwargs is not None:
        kwargs = parse_model_kwargs(args.model_kwargs)
    elif info and info.get("model") == name:
        kwargs = dict(info.get("model_kwargs") or {})
    else:
        kwargs = quick_model_kwargs(name) if quick else {}
    activation = args.activation or (info.get("activation") if info.get("model") == name else None)
    dataset = args.dataset or info.get("dataset") or "digits"
    splits = None
    if need_data or quick or dataset not in KNOWN_SHAPES:  # e.g. imagefolder: shape from its files
        from lowbit.data import load_dataset
        splits = load_dataset(dataset, root=args.data_root, seed=args.seed)
    import torch
    torch.manual_seed(args.seed)
    model = build_model(name, dataset, kwargs, activation, splits)
    src = Source(model, splits, name, dataset, kwargs, activation, str(file) if file else "train-quick")
    if check is not None:
        check(model, src.input_shape)
    if file is not None:
        from lowbit.checkpoint import load_into
        load_into(model, file)
    elif quick:
        _train(src, args, Path(out_folder if out_folder is not None else "runs/train_quick"))
    model.eval()
    return src


def _train(src: Source, args, out: Path) -> None:
    import torch
    settings = quick_settings(src.name)
    key = json.dumps([src.name, src.dataset, src.model_kwargs, src.activation, args.epochs, args.seed, settings],
                     sort_keys=True)
    run_dir = out / "train_quick" / f"{src.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    t0 = time.perf_counter()
    res = train_quick(src.model, src.splits, epochs=args.epochs, seed=args.seed, run_dir=run_dir, name=src.name)
    s = res["summary"]
    out.mkdir(parents=True, exist_ok=True)
    torch.save(src.model.state_dict(), out / "model.pt")
    import yaml
    info = {"model": src.name, "model_kwargs": src.model_kwargs, "activation": src.activation,
            "dataset": src.dataset, "seed": args.seed, "trained": {"epochs": args.epochs, **settings,
            "run_dir": str(run_dir), "final_test_acc": s.get("final_test_acc")}, **provenance()}
    info = json.loads(json.dumps(info, default=str))   # plain types only (torch's version is a str subclass)
    (out / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    print(f"trained {src.name} {json.dumps(src.model_kwargs)} on {src.dataset}: {s.get('epochs_run')} epochs, "
          f"test acc {100 * s.get('final_test_acc', float('nan')):.2f}% ({time.perf_counter() - t0:.1f}s; "
          f"weights {out / 'model.pt'})", file=sys.stderr)


def provenance() -> dict:
    """Code version and environment columns for a command's results (as every sweep row has)."""
    from lowbit.experiments.env import code_version, environment
    return {**code_version(), **environment("cpu")}

