"""Which kernels fake quantization runs on: declared once, chosen by one scoped context.

    ``auto``      native where it covers the call, else compiled for large tensors, eager for small ones
    ``eager``     plain torch, no compile time
    ``compiled``  ``torch.compile``'d kernels
    ``native``    the C++ kernels of :mod:`lowbit.ops.native` (an error where they do not apply)
(see :mod:`lowbit.ops.kernels` for the exact rule). The backend of a call is, first match wins: the
``backend=`` argument of :func:`lowbit.quantize`; the innermost ``with lowbit.backend(name):`` block
of the current thread / task; the ``LOWBIT_BACKEND`` environment variable; ``auto``. Library
entry points (PTQ, search evaluation, sensitivity, export) take ``backend=None`` and scope it with
this context; process pools (search workers) receive the backend current when they were created.

    >>> with lowbit.backend("native"):
    ...     model(x)              # every quantizer in the model runs the C++ kernels
"""
from __future__ import annotations

import contextlib
import contextvars
import os

BACKENDS = ("auto", "eager", "compiled", "native")
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("lowbit_backend", default=None)


def check_backend(name, what: str = "backend") -> str:
    """``name`` if it is a backend, else a one-line ValueError naming the allowed ones."""
    if name not in BACKENDS:
        raise ValueError(f"{what}={name!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def backend(name: str | None):
    """Run the block with fake-quant backend ``name`` (restored on exit, also on error); ``None``
    keeps the current one, so a library function can take ``backend=None`` and scope it this way."""
    if name is None:
        yield current_backend()
        return
    token = _CURRENT.set(check_backend(name))
    try:
        yield name
    finally:
        _CURRENT.reset(token)


def current_backend() -> str:
    """The backend a call without ``backend=`` uses (module docstring)."""
    b = _CURRENT.get()
    if b is not None:
        return b
    return check_backend(os.environ.get("LOWBIT_BACKEND", "auto"), "LOWBIT_BACKEND")
