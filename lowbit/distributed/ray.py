"""Ray set-up shared by the sweep executor (:mod:`lowbit.experiments.executors.ray`) and the search
evaluator (:class:`lowbit.search.Evaluator` with ``executor="ray"``)."""
from __future__ import annotations

from lowbit.distributed.cores import cpu_count


def require_ray():
    """Import ray or raise an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("the ray executor needs Ray: pip install 'lowbit[ray]' "
                          "(or pip install ray)") from err
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to ``address`` (a cluster), or start Ray in-process with ``num_cpus`` (default:
    this machine's cores). Does nothing when Ray is already initialised."""
    ray = require_ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or cpu_count(), include_dashboard=False,
                     log_to_driver=False)
    return ray
