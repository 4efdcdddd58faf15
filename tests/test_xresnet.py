"""XResNet (models/imagenet/xresnet.py): the bag-of-tricks changes are there and it trains."""

import pytest
import torch
import torch.nn as nn

from torchcls.config import build_config
from torchcls.engine.muon import Muon
from torchcls.engine.optim import build_optimizer
from torchcls.models import create_model
from torchcls.models.imagenet.xresnet import Block, MaxBlurPool, SimpleSelfAttention, XResNet


def fixed_batch_losses(model, opt, x, y, steps):
    """The training losses of `steps` optimiser steps on one fixed batch."""
    model.train()
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["xresnet18", "xresnet26", "xresnet50_mish"])
def test_xresnet_blocks_start_as_identity_and_learn(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert blocks and all(b.branch[-1][1].weight.abs().sum() == 0 for b in blocks)  # zero-initialised last BN
    downs = [b for b in blocks if len(b.shortcut) and isinstance(b.shortcut[0], nn.AvgPool2d)]
    assert len(downs) == 3  # ResNet-D: stages 2-4 downsample their shortcut by average pooling
    convs = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3 and convs[0].stride == (2, 2)  # ResNet-C deep stem
    b = blocks[0].eval()
    x = torch.randn(2, b.branch[0][0].in_channels, 8, 8)
    with torch.no_grad():
        assert torch.allclose(b(x), b.act(b.shortcut(x)))
    if name != "xresnet18":
        return
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    losses = fixed_batch_losses(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), x, y, 8)
    assert losses[-1] < losses[0]


def test_the_5_epoch_recipes_optimizer_trains_xresnet():
    """imagewoof-128-5ep's optimiser (Muon for every filter, each followed by BatchNorm; SGD for
    the rest; Lookahead) lowers the loss of its network on a fixed batch. Its iteration runs in
    float32 here (bf16 only under bf16 autocast, which an AVX2 CPU emulates slowly)."""
    cfg = build_config({"lookahead_k": 2}, recipe="imagewoof-128-5ep")  # its k 6 syncs, sooner
    torch.manual_seed(0)
    model = create_model(cfg.arch, num_classes=5)
    assert build_optimizer(model, cfg, amp_dtype=torch.bfloat16).ns_dtype == torch.bfloat16
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, Muon) and opt.ns_dtype == torch.float32
    filters = {id(p) for p in model.parameters() if p.ndim == 4}
    assert {id(p) for p in opt.param_groups[0]["params"]} == filters and opt.param_groups[0]["muon"]
    x, y = torch.randn(8, 3, 24, 24), torch.arange(8) % 5
    losses = fixed_batch_losses(model, opt, x, y, 4)  # two Lookahead syncs
    assert losses[-1] < 0.5 * losses[0]


def test_xresnet_takes_one_channel_and_rejects_bad_depths():
    model = create_model("xresnet18", num_classes=3, in_channels=1)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3) and model.input_channels == 1
    with pytest.raises(ValueError, match="depth must be one of"):
        XResNet(depth=19)


def test_self_attention_and_blur_pool():
    """xresnet18_mish_sa: the attention layer starts as the identity and computes
    x + gamma (x x^T) W x; the blurred pooling keeps MaxPool2d(3, 2, 1)'s output size and a
    constant image inside its border."""
    torch.manual_seed(0)
    model = create_model("xresnet18_mish_sa", num_classes=4)
    attn = [m for m in model.modules() if isinstance(m, SimpleSelfAttention)]
    assert len(attn) == 1 and model.layers[1].branch[-1] is attn[0]  # stage 1's last block
    assert isinstance(model.stem[-1], MaxBlurPool)
    sa = attn[0].eval()
    x = torch.randn(2, 64, 5, 6)
    with torch.no_grad():
        assert torch.equal(sa(x), x)
        sa.gamma.fill_(0.5)
        f = x.flatten(2)
        w = sa.conv.weight.squeeze(-1)  # the spectrally normalised weight
        want = f + 0.5 * (f @ f.transpose(1, 2)) @ (w @ f)
        assert torch.allclose(sa(x), want.reshape(x.shape), rtol=1e-4, atol=1e-3)
    pool = MaxBlurPool()
    for h, w_ in [(8, 8), (7, 9)]:
        y = torch.randn(1, 3, h, w_)
        assert pool(y).shape == nn.MaxPool2d(3, 2, 1)(y).shape
    assert torch.allclose(pool(torch.full((1, 2, 9, 9), 3.0))[..., 1:-1, 1:-1], torch.tensor(3.0))
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 4) and sa.gamma.grad is not None


def test_depthwise_bottlenecks():
    """xresnet50_mish_dw6 (the leaderboard's depthwise(x6)): every bottleneck's 3x3 is a grouped
    convolution, one group per channel, with 6 filters each, and the last 1x1 reads all of them;
    the blocks still start as the identity and gradients reach the depthwise filters. Basic-block
    depths refuse it."""
    torch.manual_seed(0)
    model = create_model("xresnet50_mish_dw6", num_classes=3)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for b in blocks:
        mid, last = b.branch[1][0], b.branch[2][0]
        planes = b.branch[0][0].out_channels
        assert mid.groups == planes and mid.in_channels == planes and mid.out_channels == 6 * planes
        assert mid.kernel_size == (3, 3) and last.in_channels == 6 * planes
        assert b.branch[-1][1].weight.abs().sum() == 0
    assert [b.branch[1][0].stride for b in blocks if b.shortcut and isinstance(b.shortcut[0], nn.AvgPool2d)] == [
        (2, 2)
    ] * 3
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 3) and blocks[0].branch[1][0].weight.grad is not None
    with pytest.raises(ValueError, match="bottleneck depth"):
        XResNet(depth=18, dw=4)


def test_xresnet34_mish_layout():
    """XResNet-34 (run 35 of the Imagewoof table): basic blocks 3, 4, 6, 3 with Mish, 21.3 M parameters."""
    model = create_model("xresnet34_mish", num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert [b.branch[0][0].out_channels for b in blocks] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert len(blocks[0].branch) == 2  # basic block: two 3x3 convolutions, no bottleneck
    assert any(isinstance(m, nn.Mish) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 21_309_034
