"""BatchNorm over the whole data-parallel batch, on CPU (gloo) as on GPU.

``torch.nn.SyncBatchNorm`` refuses CPU tensors; :class:`GlobalBatchNorm` computes the same thing with
differentiable all-reduces (sum forward, sum of the gradients backward): in training, mean and biased variance over
every rank's samples (two passes: the mean first, then the mean squared deviation, as accurate as one
process), running statistics updated with the unbiased variance of the global batch, exactly as
``nn.BatchNorm*d`` does in one process with the whole batch; in evaluation the running statistics
(no communication). The backward all-reduces the statistics' gradients, as SyncBatchNorm does.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over the ranks, differentiable (the backward sums the gradients likewise)."""
    return _AllReduceSum.apply(t)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        t = t.clone().contiguous()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g):
        g = g.clone().contiguous()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm of any rank (1d/2d/3d input) whose batch statistics span all ranks."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects input of at least 2 dims (N, C, ...), got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training or not self.track_running_stats) or not dist.is_initialized():
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() / x.shape[1]])])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:-1] / n
        var = all_reduce((xf - mean.view(shape)).square().sum(dims)) / n
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), n.item())
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean, var, n: float) -> None:
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - m).add_(mean, alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased, alpha=m)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d/2d/3d replaced, in place, by a :class:`GlobalBatchNorm`
    holding the same parameters and buffers; returns it (a new module if ``module`` is one)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=_device(module))
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _device(module: nn.Module):
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return None
