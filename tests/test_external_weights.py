"""Users' own torchvision ResNet-18 / timm DeiT-Tiny state dicts load into the zoo models.

The state dicts are built here key by key in torchvision's ``resnet18`` and timm's
``deit_tiny_patch16_224`` layouts (names and shapes from their architectures: neither library is
installed), saved with torch.save / safetensors, loaded through lowbit's one checkpoint loader, and
the zoo model's output is compared with an independent forward pass written here from the
state dict itself (torchvision's BasicBlock, timm's pre-norm Block).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowbit.checkpoint import CheckpointError, load_into
from lowbit.models import create_model
from lowbit.models.external import detect_layout, torchvision_resnet_key

WIDTHS = (64, 128, 256, 512)


def _bn(sd, name, c, g):
    sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[f"{name}.num_batches_tracked"] = torch.tensor(7)


def _conv(out, inp, k, g):
    return torch.randn(out, inp, k, k, generator=g) * (2.0 / (inp * k * k)) ** 0.5


def torchvision_resnet18(num_classes=1000, stem_kernel=7, seed=0) -> dict:
    """torchvision.models.resnet18().state_dict() layout, random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {"conv1.weight": _conv(64, 3, stem_kernel, g)}
    _bn(sd, "bn1", 64, g)
    prev = 64
    for i, w in enumerate(WIDTHS, start=1):
        for j in range(2):
            p = f"layer{i}.{j}"
            sd[f"{p}.conv1.weight"] = _conv(w, prev if j == 0 else w, 3, g)
            _bn(sd, f"{p}.bn1", w, g)
            sd[f"{p}.conv2.weight"] = _conv(w, w, 3, g)
            _bn(sd, f"{p}.bn2", w, g)
            if i > 1 and j == 0:
                sd[f"{p}.downsample.0.weight"] = _conv(w, prev, 1, g)
                _bn(sd, f"{p}.downsample.1", w, g)
        prev = w
    sd["fc.weight"] = 0.05 * torch.randn(num_classes, 512, generator=g)
    sd["fc.bias"] = 0.05 * torch.randn(num_classes, generator=g)
    return sd


def _bn_eval(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-5)


def torchvision_forward(sd, x, maxpool=True):
    """torchvision ResNet-18 (BasicBlock, stride on conv1 of the first block of stages 2-4)."""
    k = sd["conv1.weight"].shape[-1]
    x = F.relu(_bn_eval(F.conv2d(x, sd["conv1.weight"], stride=2 if k == 7 else 1, padding=k // 2), sd, "bn1"))
    if maxpool:
        x = F.max_pool2d(x, 3, 2, 1)
    for i in range(1, 5):
        for j in range(2):
            p, s = f"layer{i}.{j}", 2 if (i > 1 and j == 0) else 1
            out = F.relu(_bn_eval(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=1), sd, f"{p}.bn1"))
            out = _bn_eval(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            idn = x
            if f"{p}.downsample.0.weight" in sd:
                idn = _bn_eval(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd, f"{p}.downsample.1")
            x = F.relu(out + idn)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def timm_deit_tiny(num_classes=1000, seed=0) -> dict:
    """timm deit_tiny_patch16_224 state_dict layout (192 dim, 12 blocks, 3 heads, mlp 768), random values."""
    g = torch.Generator().manual_seed(seed)
    d, h = 192, 768

    def r(*shape, s=0.02):
        return s * torch.randn(*shape, generator=g)

    sd = {"cls_token": r(1, 1, d), "pos_embed": r(1, 197, d), "patch_embed.proj.weight": r(d, 3, 16, 16),
          "patch_embed.proj.bias": r(d)}
    for i in range(12):
        p = f"blocks.{i}"
        sd.update({f"{p}.norm1.weight": 1 + r(d), f"{p}.norm1.bias": r(d),
                   f"{p}.attn.qkv.weight": r(3 * d, d, s=0.08), f"{p}.attn.qkv.bias": r(3 * d),
                   f"{p}.attn.proj.weight": r(d, d, s=0.08), f"{p}.attn.proj.bias": r(d),
                   f"{p}.norm2.weight": 1 + r(d), f"{p}.norm2.bias": r(d),
                   f"{p}.mlp.fc1.weight": r(h, d, s=0.08), f"{p}.mlp.fc1.bias": r(h),
                   f"{p}.mlp.fc2.weight": r(d, h, s=0.08), f"{p}.mlp.fc2.bias": r(d)})
    sd.update({"norm.weight": 1 + r(d), "norm.bias": r(d), "head.weight": r(num_classes, d), "head.bias": r(num_classes)})
    return sd


def timm_forward(sd, x, heads=3):
    """timm VisionTransformer forward (class token, pre-norm blocks, LayerNorm eps 1e-6, GELU)."""
    d = sd["cls_token"].shape[-1]

    def ln(t, n):
        return F.layer_norm(t, (d,), sd[f"{n}.weight"], sd[f"{n}.bias"], eps=1e-6)

    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(len(x), -1, -1), t], 1) + sd["pos_embed"]
    b, n, _ = t.shape
    for i in range(12):
        p = f"blocks.{i}"
        qkv = F.linear(ln(t, f"{p}.norm1"), sd[f"{p}.attn.qkv.weight"], sd[f"{p}.attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, -1) @ v
        t = t + F.linear(a.transpose(1, 2).reshape(b, n, d), sd[f"{p}.attn.proj.weight"], sd[f"{p}.attn.proj.bias"])
        m = F.gelu(F.linear(ln(t, f"{p}.norm2"), sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"]))
        t = t + F.linear(m, sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
    return F.linear(ln(t, "norm")[:, 0], sd["head.weight"], sd["head.bias"])


def test_layouts_are_detected_and_keys_renamed():
    tv = torchvision_resnet18()
    assert detect_layout(tv) == "torchvision" and detect_layout(timm_deit_tiny()) == "timm"
    assert detect_layout(create_model("cnn").state_dict()) == "lowbit"
    assert torchvision_resnet_key("layer2.0.downsample.1.running_var", True) == "stages.1.0.shortcut.1.running_var"
    assert torchvision_resnet_key("layer4.1.bn2.weight", True) == "stages.3.1.conv2.1.weight"
    assert torchvision_resnet_key("conv1.weight", True) == "stem.0.0.weight"
    assert torchvision_resnet_key("bn1.bias", False) == "stem.1.bias"


@torch.no_grad()
def test_torchvision_resnet18_imagenet_loads_and_computes_the_same(tmp_path):
    sd = torchvision_resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)   # a DDP training checkpoint
    model = load_into(create_model("resnet18_imagenet", num_classes=1000, img_size=64), path).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x), torchvision_forward(sd, x), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_torchvision_cifar_port_loads_from_safetensors(tmp_path):
    from safetensors.torch import save_file
    sd = torchvision_resnet18(num_classes=100, stem_kernel=3, seed=2)   # conv1 3x3, maxpool = Identity
    path = tmp_path / "resnet18_cifar100.safetensors"
    save_file(sd, str(path))
    model = load_into(create_model("resnet18", num_classes=100, img_size=32), path).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(x), torchvision_forward(sd, x, maxpool=False), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_timm_deit_tiny_loads_and_computes_the_same(tmp_path):
    sd = timm_deit_tiny()
    path = tmp_path / "deit_tiny_patch16_224.pth"
    torch.save({"model": sd}, path)                       # the layout of the official DeiT checkpoints
    model = load_into(create_model("deit_tiny", num_classes=1000, img_size=224, act="gelu"), path).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(x), timm_forward(sd, x), rtol=1e-4, atol=1e-4)


def test_mismatches_list_missing_unexpected_and_shapes(tmp_path):
    sd = torchvision_resnet18(num_classes=100)
    del sd["fc.bias"]
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "tv.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_into(create_model("resnet18", num_classes=100, img_size=32), path)   # CIFAR stem: 3x3
    msg = str(e.value)
    assert "\n" not in msg and "torchvision layout" in msg
    assert "missing keys: fc.bias" in msg and "unexpected keys: layer5.0.conv1.weight" in msg
    assert "stem.0.weight (64, 3, 7, 7) vs model (64, 3, 3, 3)" in msg
    torch.save(timm_deit_tiny(num_classes=10), path)
    with pytest.raises(CheckpointError, match=r"pos_embed \(1, 197, 192\) vs model \(1, 65, 192\)"):
        load_into(create_model("deit_tiny", num_classes=10, in_chans=3, img_size=32), path)


def test_cli_uses_a_torchvision_checkpoint(tmp_path, capsys):
    from lowbit.cli import main
    path = tmp_path / "resnet18_cifar100.pt"
    torch.save(torchvision_resnet18(num_classes=100, stem_kernel=3), path)
    assert main(["cost", "--checkpoint", str(path), "--model", "resnet18", "--dataset", "cifar100"]) == 0
    assert main(["cost", "--checkpoint", str(path), "--model", "resnet18_imagenet", "--dataset", "cifar100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stem.0.0.weight (64, 3, 3, 3) vs model (64, 3, 7, 7)" in err
