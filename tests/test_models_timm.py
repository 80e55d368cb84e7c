"""timm models by name (``timm:<arch>``): a real path when timm imports, one clear error when it does not."""
import sys

import pytest
import torch

from lowbit.experiments.schema import ConfigError, sweep_from_dict
from lowbit.models import create_model

NAME = "timm:vit_tiny_patch16_224"


def test_without_timm_every_use_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)   # as where timm (or its torchvision) cannot be imported
    with pytest.raises(ImportError, match=r"^timm models need the timm package, which cannot be imported here "
                                          r"\((ModuleNotFound|Import)Error: .*\); install timm \(it needs torchvision\)"):
        create_model(NAME, num_classes=10, in_chans=1, img_size=32)
    with pytest.raises(ConfigError, match=rf"^models\[0\]: '{NAME}': timm models need the timm package"):
        sweep_from_dict({"models": [NAME], "activations": ["gelu"]})


def test_timm_model_builds_and_runs_when_timm_is_importable():
    pytest.importorskip("timm", reason="timm is not importable here (it needs torchvision, never installed)")
    model = create_model(NAME, num_classes=10, in_chans=1, img_size=32, patch_size=8, depth=1)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="activations: 'relu' with 'timm:vit_tiny_patch16_224'"):
        sweep_from_dict({"models": [NAME], "activations": ["relu"]})
    with pytest.raises(ValueError, match="unknown timm architecture 'nope'"):
        create_model("timm:nope")
