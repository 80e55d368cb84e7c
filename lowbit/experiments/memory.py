"""What a training step itself allocates: a tensor-allocation counter (torch CPU keeps no allocator
statistics, and the process RSS is dominated by the interpreter, torch and the data).

:class:`AllocationCounter` is a ``TorchDispatchMode``: every op's output tensor whose storage is new
(not the storage of one of the op's inputs: views and in-place ops allocate nothing) adds its
storage's bytes; when the last tensor seen on that storage is freed the bytes are subtracted.
``peak`` is the highest total reached. Autograd's backward ops run through the mode too (on CPU the
engine runs them in the calling thread), so saved activations, gradients and the fake-quantization
temporaries all count; tensors that exist before the mode starts (parameters, the batch) do not.

:func:`step_peak_bytes` measures one training step (forward, cross-entropy, backward, an SGD-like
update of the gradients) of a copy of the model, so the model itself and the RNG are left untouched.
On CUDA, use ``torch.cuda.max_memory_allocated`` instead (what ``lowbit.train`` reports there).
"""
from __future__ import annotations

import copy
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(args) -> set:
    out = set()
    for t in tree_flatten(args)[0]:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            try:
                out.add(t.untyped_storage().data_ptr())
            except (RuntimeError, NotImplementedError):
                pass
    return out


class AllocationCounter(TorchDispatchMode):
    """Bytes of tensor storage allocated while the mode is active: ``current`` and ``peak``."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, list] = {}   # storage data_ptr -> [tensors alive, bytes]

    def _free(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = _storages((args, kwargs))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr in inputs and ptr not in self._live:
                continue                      # a view or in-place result of a tensor from outside
            if ptr not in self._live:
                self._live[ptr] = [0, st.nbytes()]
                self.current += st.nbytes()
                self.peak = max(self.peak, self.current)
            self._live[ptr][0] += 1
            weakref.finalize(t, self._free, ptr)
        return out


def step_peak_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Peak bytes one training step of (a copy of) ``model`` on batch ``(x, y)`` allocates."""
    run = copy.deepcopy(model)
    run.train()
    with torch.random.fork_rng(devices=[]):
        counter = AllocationCounter()
        with counter:
            loss = F.cross_entropy(run(x).float(), y)
            loss.backward()
            with torch.no_grad():
                for p in run.parameters():
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-1e-3)
            del loss
    return counter.peak
