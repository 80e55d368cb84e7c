"""The built-in default sweep (``lowbit run`` with no config); ``configs/default.yaml`` is a copy.

3 models x 2 activations x 6 precisions = 36 runs on the bundled digits set (8x8 px), sized to
finish with its report in under 5 minutes on 2 CPU cores.
"""
DEFAULT_SWEEP = {
    "name": "default",
    "description": "cnn, mlpmixer and vit x relu, gelu x fp32 .. fp2 (weights and activations) "
                   "on digits",
    "models": ["cnn", "mlpmixer", "vit"],
    "activations": ["relu", "gelu"],
    "datasets": ["digits"],
    "precisions": ["fp32", "fp8_e4m3", "fp6_e3m2", "fp4_e2m1", "fp3", "fp2"],
    "softmax_precisions": [None],
    "quantize": ["weights", "activations"],
    "augmentations": ["none"],
    "seeds": [0],
    "epochs": 6,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 0.01,
    "weight_decay": 0.01,
    "warmup_epochs": 1,
    "quant_backend": "auto",   # native kernels where they apply; eager for small tensors elsewhere
    "model_kwargs": {
        "cnn": {"channels": [16, 32, 32]},
        "mlpmixer": {"dim": 32, "depth": 2, "token_mlp_dim": 32, "channel_mlp_dim": 64},
        "vit": {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 4},
    },
}
