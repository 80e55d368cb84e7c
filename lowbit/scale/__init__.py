"""Scaling out: sweeps as Ray tasks, data-parallel single runs, experiment trackers.

    lowbit run CONFIG --executor ray [--address ADDR]     # lowbit.scale.ray_executor
    torchrun --nproc_per_node 2 -m lowbit.scale.ddp --config CONFIG   # lowbit.scale.ddp
    lowbit run CONFIG --log tensorboard|mlflow            # lowbit.scale.trackers

Every dependency here is optional (``pip install 'lowbit[ray]'`` etc.); importing this package
imports none of them.
"""
