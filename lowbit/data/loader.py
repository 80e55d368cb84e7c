"""A fast batch iterator over in-memory tensors (no per-sample Python, no worker processes)."""
from __future__ import annotations

from typing import Callable, Iterator

import torch

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``n`` samples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    transform: Transform | None = None,
                    device: torch.device | str | None = None,
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(xb, yb)`` batches of ``(x, y)``, each sample exactly once per call (one epoch).

    ``shuffle`` draws one permutation with ``torch.randperm(generator=generator)`` (the global RNG
    if ``generator`` is None); otherwise batches are contiguous slices in order. Batches are
    moved to ``device`` (default: stay where ``x`` is), then passed through
    ``transform(xb, generator)`` -- e.g. a :func:`lowbit.data.get_augmentation` pipeline -- so one
    seeded generator makes the whole epoch (order and augmentation) reproducible. With
    ``drop_last`` a final short batch is skipped.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    n = len(x)
    non_blocking = device is not None and torch.device(device).type == "cuda"
    order = None
    if shuffle:
        gen_device = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=gen_device).to(x.device)
    for b in range(num_batches(n, batch_size, drop_last)):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        if order is None:
            xb, yb = x[lo:hi], y[lo:hi]
        else:
            idx = order[lo:hi]
            xb, yb = x[idx], y[idx.to(y.device)]
        if device is not None:  # async copies only host -> GPU, where they are safe
            xb = xb.to(device, non_blocking=non_blocking)
            yb = yb.to(device, non_blocking=non_blocking)
        if transform is not None:
            xb = transform(xb, generator)
        yield xb, yb
