"""DeiT-Tiny (lowbit zoo) on the built-in digits data: --train-quick's recipe vs the plain QUICK one.

    python benchmarks/train_quick_deit.py [--epochs 5]

Prints per-epoch validation accuracy and the final test accuracy of both (chance: 10 %). The figures
in lowbit/cli/source.py (QUICK_BY_MODEL) come from this script.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from lowbit.cli.source import QUICK, quick_settings
from lowbit.data import load_dataset
from lowbit.models import create_model
from lowbit.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    splits = load_dataset("digits", seed=0)
    print(f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}, "
          f"{torch.get_num_threads()} threads")
    for label, settings in (("QUICK (no warm-up)", QUICK), ("train-quick deit_tiny", quick_settings("deit_tiny"))):
        torch.manual_seed(0)
        model = create_model("deit_tiny", num_classes=splits.num_classes, in_chans=splits.in_chans,
                             img_size=splits.img_size)
        t0 = time.perf_counter()
        res = train(model, splits, TrainConfig(epochs=args.epochs, seed=0, **settings))
        vals = " ".join(f"{100 * e['val_acc']:.1f}" for e in res["epochs"])
        print(f"{label}: {settings}\n  val acc per epoch (%): {vals}; test acc "
              f"{100 * res['summary']['final_test_acc']:.1f}% ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
