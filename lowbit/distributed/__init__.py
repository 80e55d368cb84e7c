"""Training and evaluation over several processes or machines: DDP for one large run, Ray set-up.

    train_ddp(model, splits, cfg)          # lowbit.distributed.ddp, inside torchrun processes
    ray = init_ray(address)                # lowbit.distributed.ray, for the sweep and search executors
    cpu_count()                            # lowbit.distributed.cores: the cores this process may use

The sweep-level pieces sit above: :mod:`lowbit.experiments.executors` (local / Ray sweep executors),
:mod:`lowbit.experiments.ddp` (a sweep's runs, each data-parallel) and ``python -m lowbit.cli.ddp``
(the torchrun entry point). Every optional dependency (ray) is imported on first use only.
"""
