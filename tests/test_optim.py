"""Optimizer choices, Lookahead and the flat-cos schedule (engine/optim.py); mixup (engine/step.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from torchcls.config import TrainConfig, build_config
from torchcls.engine.optim import COUNT, SLOW, build_optimizer, cubic_alpha, lr_factor
from torchcls.engine.step import TrainStep
from torchcls.errors import UserError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _steps(net, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize(
    "name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("radam", torch.optim.RAdam)]
)
def test_optimizer_choice(name, cls):
    cfg = TrainConfig(arch="resnet20", optimizer=name, lr=0.01, betas=[0.95, 0.99], adam_eps=1e-6, weight_decay=0.01)
    opt = build_optimizer(_net(), cfg)
    assert type(opt) is cls
    if name != "sgd":
        assert opt.defaults["betas"] == (0.95, 0.99) and opt.defaults["eps"] == 1e-6
        assert opt.param_groups[0]["weight_decay"] == 0.01
    if name == "radam":
        assert opt.defaults["decoupled_weight_decay"] is True


@pytest.mark.parametrize("schedule", ["constant", "cubic"])
def test_lookahead_follows_its_definition(schedule):
    """Run plain RAdam and RAdam + Lookahead(k=3, alpha=0.5) side by side on the same batches and
    redo Lookahead's arithmetic by hand on the plain one's weights. The cubic schedule (airbench's)
    syncs at step k of T with alpha 1 - (1 - 0.5) * (k / T)^3 and averages BatchNorm's statistics too."""
    k, end, total = 3, 0.5, 4
    alpha = end if schedule == "constant" else 1 - (1 - end) * (k / total) ** 3  # 0.789 for the cubic one
    net_la, net_ref = _net(), _net()
    cfg = TrainConfig(optimizer="radam", lr=0.01, lookahead_k=k, lookahead_alpha=end, lookahead_schedule=schedule)
    opt_la = build_optimizer(net_la, cfg, total)
    opt_ref = build_optimizer(net_ref, TrainConfig(optimizer="radam", lr=0.01))
    start = [p.detach().clone() for p in net_la.parameters()]
    _steps(net_la, opt_la, 1)
    _steps(net_ref, opt_ref, 1)
    bn0 = copy.deepcopy(net_la[1])  # the slow statistics start where the first step found them (after its forward)
    _steps(net_la, opt_la, k - 2, seed=2)
    _steps(net_ref, opt_ref, k - 2, seed=2)
    for a, b in zip(net_la.parameters(), net_ref.parameters(), strict=True):  # no sync yet: identical
        assert torch.equal(a, b)
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    for net, opt in ((net_la, opt_la), (net_ref, opt_ref)):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for p, p_ref, s0 in zip(net_la.parameters(), net_ref.parameters(), start, strict=True):
        expect = s0 + alpha * (p_ref - s0)  # the k-th step: slow moves half way, fast restarts there
        torch.testing.assert_close(p, expect)
    bn_la, bn_ref = net_la[1], net_ref[1]  # running statistics: averaged by the cubic schedule only
    for name in ("running_mean", "running_var"):
        b, b_ref, b0 = getattr(bn_la, name), getattr(bn_ref, name), getattr(bn0, name)
        torch.testing.assert_close(b, b0 + alpha * (b_ref - b0) if schedule == "cubic" else b_ref)
    assert opt_la.param_groups[0][COUNT] == k
    assert all(torch.equal(s, p) for s, p in zip(opt_la.param_groups[0][SLOW], net_la[0].parameters(), strict=False))
    synced = copy.deepcopy(net_la.state_dict())
    _steps(net_la, opt_la, 1, seed=3)  # step 4 = T, between syncs: the cubic run ends on the averaged weights
    for name, value in net_la.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, synced[name]) == (schedule == "cubic"), name


@pytest.mark.parametrize("schedule", ["constant", "cubic"])
def test_lookahead_resumes_exactly_from_a_state_dict(schedule):
    cfg = TrainConfig(optimizer="radam", lr=0.01, lookahead_k=4, lookahead_alpha=0.5, no_wd_norm_bias=True,
                      lookahead_schedule=schedule)  # fmt: skip
    net = _net()
    opt = build_optimizer(net, cfg, 20)
    _steps(net, opt, 6)
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    _steps(net, opt, 7, seed=5)  # the uninterrupted run: steps 7..13 (syncs at 8 and 12)
    net2 = _net()
    net2.load_state_dict(saved_net)
    opt2 = build_optimizer(net2, cfg, 20)
    opt2.load_state_dict(saved_opt)
    _steps(net2, opt2, 7, seed=5)
    for (name, a), b in zip(net.state_dict().items(), net2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights and, for the cubic schedule, its averaged BatchNorm statistics


def test_cubic_lookahead_schedule_runs_from_one_to_its_end():
    a = cubic_alpha(0.226, 400)
    assert a(0) == 1.0 and a(400) == pytest.approx(0.226) and a(200) == pytest.approx(1 - 0.774 / 8)
    assert all(a(t) >= a(t + 5) for t in range(0, 400, 5))
    with pytest.raises(ValueError, match="total_steps"):  # the schedule needs the run's length
        build_optimizer(_net(), TrainConfig(optimizer="sgd", lookahead_k=5, lookahead_schedule="cubic"))


def test_flatcos_holds_then_anneals():
    cfg = TrainConfig(epochs=10, lr_schedule="flatcos", anneal_start=0.6, warmup_epochs=1)
    spe = 10
    f = [lr_factor(s, spe, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0  # warm-up
    assert all(v == 1.0 for v in f[10:61])  # flat until 60% of the run
    assert f[80] == pytest.approx(0.5, abs=0.01)  # half way through the cosine
    assert f[99] < 0.01 and all(a >= b for a, b in zip(f[60:], f[61:], strict=False))


def test_bad_optimizer_settings_are_one_line_errors():
    for over in ({"optimizer": "lion"}, {"betas": [0.9, 1.2]}, {"lookahead_k": -1}, {"anneal_start": 1.0},
                 {"lookahead_schedule": "linear"}, {"lookahead_schedule": "cubic"},
                 {"mixup": -0.2}):  # fmt: skip
        with pytest.raises(UserError):
            build_config({"arch": "resnet20", **over})


def test_mixup_blends_the_batch_and_its_loss_from_the_generator():
    """lambda >= 0.5, x' = lam x + (1 - lam) x[perm], loss = lam CE(y) + (1 - lam) CE(y[perm]); the same
    generator state gives the same draw (what resumed and repeated runs rely on)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    step = TrainStep(net, opt, sched, torch.amp.GradScaler("cpu", enabled=False), nn.CrossEntropyLoss(),
                     lambda x, g: x, [0.5] * 3, [0.25] * 3, torch.device("cpu"), None, False, mixup=0.4)  # fmt: skip
    x = torch.randn(8, 3, 4, 4)
    mixed, lam, perm = step.mix(x, torch.Generator().manual_seed(3))
    again = step.mix(x, torch.Generator().manual_seed(3))
    assert 0.5 <= lam <= 1 and sorted(perm.tolist()) == list(range(8)) and perm.tolist() != list(range(8))
    assert torch.equal(mixed, again[0]) and lam == again[1]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    draws = {round(step.mix(x, torch.Generator().manual_seed(s))[1], 6) for s in range(20)}
    assert len(draws) == 20  # a fresh lambda per draw
    xb, y = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8), torch.arange(8) % 3
    r = step(xb, y, torch.Generator().manual_seed(5))
    xin, lam, perm = step.mix(step.inputs(xb, None), torch.Generator().manual_seed(5))
    out = net(xin)
    want = lam * nn.functional.cross_entropy(out, y) + (1 - lam) * nn.functional.cross_entropy(out, y[perm])
    assert r.finite and abs(r.loss - want.item()) < 1e-5
