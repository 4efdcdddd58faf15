"""The airbench ideas for SpeedNet: Muon for the filters (engine/muon.py), the whitening bias
trained only at the start (engine/optim.py) and alternating flips (data/loader.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from tests._data import needs_fmnist
from torchcls.config import TrainConfig, build_config
from torchcls.data.build import build_data
from torchcls.data.loader import InMemoryLoader, alternate_flips
from torchcls.engine.evaluate import tta_logits
from torchcls.engine.muon import Muon, orthogonalize
from torchcls.engine.optim import EARLY, build_optimizer, build_scheduler
from torchcls.errors import UserError
from torchcls.models import create_model


def test_orthogonalize_flattens_the_spectrum_and_keeps_the_directions():
    g = torch.Generator().manual_seed(0)
    for shape in ((32, 72), (72, 32)):  # wide and tall
        k = min(shape)
        u = torch.linalg.qr(torch.randn(shape[0], k, generator=g)).Q
        v = torch.linalg.qr(torch.randn(shape[1], k, generator=g)).Q
        s = torch.logspace(0, -1.5, k)  # singular values from 1 down to 0.03
        m = u @ torch.diag(s) @ v.T
        o = orthogonalize(m)
        so = torch.linalg.svdvals(o)
        assert so.max() < 1.3 and so.min() > 0.5  # three steps: roughly flat (a 30:1 spread before)
        vh = v.T
        # same singular vectors: U^T O V is (nearly) diagonal and positive
        core = u.T @ o @ vh.T
        off = core - torch.diag(torch.diagonal(core))
        assert off.abs().max() < 1e-3 and torch.diagonal(core).min() > 0


def test_orthogonalize_in_bfloat16_stays_close_to_float32():
    """--muon-ns-dtype auto runs the iteration in bf16 under bf16 autocast: the same map within bf16's rounding."""
    g = torch.Generator().manual_seed(0)
    for shape in ((64, 576), (576, 64)):
        m = torch.randn(shape, generator=g)
        o32, o16 = orthogonalize(m), orthogonalize(m, dtype=torch.bfloat16)
        assert o16.dtype == torch.float32  # returned in the gradient's dtype
        assert (o16 - o32).norm() / o32.norm() < 0.03


@pytest.mark.parametrize(
    ("setting", "amp", "expect"),
    [("auto", torch.bfloat16, torch.bfloat16), ("auto", None, torch.float32), ("auto", torch.float16, torch.float32),
     ("fp32", torch.bfloat16, torch.float32)],
)  # fmt: skip
def test_muon_ns_dtype_follows_the_runs_autocast_only_when_asked(setting, amp, expect):
    cfg = TrainConfig(arch="speednet_mini", optimizer="muon", muon_ns_dtype=setting)
    opt = build_optimizer(create_model("speednet_mini", num_classes=10, in_channels=1), cfg, amp_dtype=amp)
    assert opt.ns_dtype == expect


def _pair(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))


def _loss(net, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    return nn.functional.cross_entropy(net(x), y)


def test_muon_groups_follow_the_algorithm_and_sgd_groups_equal_torch_sgd():
    """Muon's non-muon groups step exactly as torch.optim.SGD (momentum, Nesterov, coupled decay);
    its muon group rescales each filter tensor to norm sqrt(out) and steps by -lr * NS(Nesterov momentum)."""
    net, ref = _pair(), _pair()
    conv = net[0].weight
    rest = [p for p in net.parameters() if p is not conv]
    opt = Muon([{"params": [conv], "muon": True, "lr": 0.1, "momentum": 0.6}, {"params": rest}],
               lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3)  # fmt: skip
    ref_rest = [p for p in ref.parameters() if p is not ref[0].weight]
    sgd = torch.optim.SGD(ref_rest, lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3)
    buf = None
    for step in range(3):
        w0 = conv.detach().clone()
        for n, o in ((net, opt), (ref, sgd)):
            o.zero_grad()
            _loss(n, step).backward()
        g = conv.grad.clone()
        opt.step()
        sgd.step()
        ref[0].weight.data.copy_(conv.data)  # keep the two nets' filters equal for the next loss
        buf = g if buf is None else buf * 0.6 + g
        d = g + 0.6 * buf
        w = w0 * (8**0.5 / w0.norm())
        expect = w - 0.1 * orthogonalize(d.reshape(8, -1)).view_as(w)
        torch.testing.assert_close(conv.detach(), expect)
        for a, b in zip(rest, ref_rest, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("lookahead_k", [0, 3])  # 3: Muon under Lookahead, as imagewoof-128-5ep trains
def test_muon_resumes_exactly_from_a_state_dict(lookahead_k):
    cfg = TrainConfig(arch="speednet_mini", optimizer="muon", lr=0.5, bias_lr_scale=8, epochs=4, whiten_bias_epochs=1,
                      lookahead_k=lookahead_k)  # fmt: skip
    net = create_model("speednet_mini", num_classes=10, in_channels=1)

    def steps(n, opt, sched, model, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            x, y = torch.randn(4, 1, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()

    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, 2, cfg)
    steps(3, opt, sched, net, 1)
    saved = copy.deepcopy((net.state_dict(), opt.state_dict(), sched.state_dict()))
    steps(4, opt, sched, net, 2)
    net2 = create_model("speednet_mini", num_classes=10, in_channels=1)
    net2.load_state_dict(saved[0])
    opt2 = build_optimizer(net2, cfg)
    sched2 = build_scheduler(opt2, 2, cfg)  # built, then loaded: the trainer's order (engine/checkpoint.py)
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    steps(4, opt2, sched2, net2, 2)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_muon_takes_the_filters_and_the_whitening_bias_trains_only_at_the_start():
    cfg = TrainConfig(arch="speednet", optimizer="muon", lr=1.5, bias_lr_scale=64, weight_decay=1e-3, epochs=8,
                      whiten_bias_epochs=3, muon_lr=0.2, momentum=0.85, nesterov=True,
                      lr_schedule="onecycle")  # fmt: skip
    net = create_model("speednet", num_classes=10)
    opt = build_optimizer(net, cfg)
    groups = opt.param_groups
    filters = {id(p) for p in net.parameters() if p.ndim == 4 and p.requires_grad}
    assert {id(p) for p in groups[0]["params"]} == filters and groups[0]["muon"] and groups[0]["lr"] == 0.2
    assert id(net.whiten.weight) not in filters  # frozen: in no group
    early = [g for g in groups if EARLY in g]
    assert len(early) == 1 and early[0]["params"] == [net.whiten.bias] and early[0]["lr"] == 1.5 * 64
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in net.parameters() if p.requires_grad)  # each once
    sched = build_scheduler(opt, 10, cfg)
    rates = []
    for _ in range(80):
        rates.append([g["lr"] for g in groups])
        opt.step()  # no gradients: nothing moves, the schedule advances
        sched.step()
    i = groups.index(early[0])
    assert rates[15][i] == pytest.approx(1.5 * 64 * 0.5) and all(r[i] == 0 for r in rates[30:])
    assert rates[0][0] == pytest.approx(0.2) and rates[40][0] == pytest.approx(0.1)  # onecycle, no warm-up


def test_whiten_bias_epochs_needs_a_whitening_layer():
    cfg = TrainConfig(arch="resnet20", whiten_bias_epochs=2, epochs=4)
    with pytest.raises(UserError, match="whitening"):
        build_optimizer(create_model("resnet20", num_classes=10), cfg)


def test_alternating_flips():
    a, b, c = (alternate_flips(1000, 3, e) for e in (0, 1, 2))
    assert torch.equal(a, ~b) and torch.equal(a, c) and 400 < int(a.sum()) < 600
    assert not torch.equal(a, alternate_flips(1000, 4, 0))  # another seed, other coins
    images = torch.arange(6 * 4 * 5, dtype=torch.uint8).view(6, 1, 4, 5)
    labels = torch.arange(6)
    loader = InMemoryLoader(images, labels, 3, train=True, seed=3, flip_alternate=True)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        flips = alternate_flips(6, 3, epoch)
        for x, y in loader:
            for xi, yi in zip(x, y, strict=True):
                expect = images[yi].flip(-1) if flips[yi] else images[yi]
                assert torch.equal(xi, expect)
    test = InMemoryLoader(images, labels, 3, train=False, flip_alternate=True)
    assert torch.equal(torch.cat([x for x, _ in test]), images)  # evaluation is never flipped


@needs_fmnist
def test_alternating_flips_replace_random_ones_in_the_run():
    cfg = build_config({"arch": "speednet_mini", "dataset": "fashion-mnist", "flip_alternate": True, "epochs": 1,
                        "flip": True, "train_subset": 64})  # fmt: skip
    data = build_data(cfg, 0, 0, 1, torch.device("cpu"))
    assert data.train.flip_alternate and not data.select.flip_alternate
    assert not data.augment.flip  # the loader has mirrored them already: no second, random flip


def test_bad_airbench_settings_are_one_line_errors():
    for over in ({"flip_alternate": True, "flip": False}, {"flip_alternate": True, "dataset": "imagenet"},
                 {"whiten_bias_epochs": -1}, {"optimizer": "muon", "muon_lr": 0},
                 {"optimizer": "muon", "muon_momentum": 1.0},
                 {"optimizer": "muon", "muon_ns_dtype": "bf16"}):  # fmt: skip
        with pytest.raises(UserError):
            build_config({"arch": "speednet", **over})


def test_a_shortened_recipe_keeps_the_whitening_bias_share():
    assert build_config({}, recipe="cifar10-speednet").whiten_bias_epochs == 3
    assert build_config({"epochs": 4}, recipe="cifar10-speednet").whiten_bias_epochs == pytest.approx(1.5)
    assert build_config({"epochs": 16}, recipe="cifar10-speednet").whiten_bias_epochs == 3  # never longer


def test_selective_tta_gives_the_extra_views_only_to_unsure_images():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(64, 3, 8, 8) * 3
    with torch.no_grad():
        single = net(x).log_softmax(1)
        full = tta_logits(net, x, flip=True, shift=1)
        cut = float(single.max(1).values.exp().median())
        sel = tta_logits(net, x, flip=True, shift=1, below=cut)
        unsure = single.max(1).values.exp() < cut
        assert 20 < int(unsure.sum()) < 44
        torch.testing.assert_close(sel[unsure], full[unsure])
        torch.testing.assert_close(sel[~unsure], single[~unsure])
        torch.testing.assert_close(tta_logits(net, x, flip=True, shift=1, below=1.0), full)
