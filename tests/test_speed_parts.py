"""The parts of the fast recipes: SpeedNet's data-set whitening, shift test-time augmentation, the
bias learning-rate scale, the allocator setting and compile_model."""

import copy
import json
import shlex

import pytest
import torch
import torch._inductor.config as inductor_config  # tests may look inside; the package does not
import torch.nn as nn
from torch._inductor.utils import run_and_get_code

import torchcls.engine.train as train_mod
from tests._data import needs_fmnist
from torchcls.cli import main
from torchcls.config import TrainConfig
from torchcls.engine.checkpoint import safe_load
from torchcls.engine.evaluate import _shift, evaluate, tta_logits
from torchcls.engine.optim import build_optimizer
from torchcls.engine.runtime import TWO_STEP_VARIANCE_THRESHOLD, compile_model, malloc_state, tune_malloc
from torchcls.engine.step import prepare
from torchcls.models import create_model, input_channels


def test_whitening_decorrelates_2x2_patches():
    torch.manual_seed(0)
    # correlated channels and neighbouring pixels: smoothed noise mixed across channels
    x = torch.randn(256, 3, 33, 33)
    x = (x[..., 1:, 1:] + x[..., :-1, :-1])[:, [0, 1, 2]] @ torch.eye(32)
    x = x + 0.8 * x[:, :1]
    net = create_model("speednet")
    net.data_init(x)
    assert bool(net.whitened)
    out = net.whiten(x)[:, :12] - net.whiten.bias[:12, None, None]
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(flat.T)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.double), atol=0.02)
    # the other 12 filters are the negatives of the first 12; the whitening weights are frozen
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])
    assert not net.whiten.weight.requires_grad


def test_shift_moves_content_and_reflects_the_border():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down_right = _shift(x, 1, 1)
    assert torch.equal(down_right[0, 0, 1:, 1:], x[0, 0, :-1, :-1])
    assert torch.equal(down_right[0, 0, 0, 1:], x[0, 0, 1, :-1])  # row -1 reflected: row 1
    up_left = _shift(x, -1, -1)
    assert torch.equal(up_left[0, 0, :-1, :-1], x[0, 0, 1:, 1:])


def test_tta_views_and_weights():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2)

    x = torch.randn(2, 3, 8, 8)
    tta_logits(Probe(), x)
    assert len(seen) == 1
    seen.clear()
    out = tta_logits(Probe(), x, flip=True, shift=1)
    assert len(seen) == 6  # 3 positions x (image, mirror image)
    assert torch.equal(seen[0], x) and torch.equal(seen[1], x.flip(3))
    assert torch.allclose(out.exp(), torch.full((2, 2), 0.5))  # averaged probabilities still sum to 1

    # a model that looks at one pixel: the shifted views change its answer by their weights (1/2, 1/4, 1/4)
    class Pixel(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, 2, 2], torch.zeros(len(x))], 1)

    img = torch.zeros(1, 3, 5, 5)
    img[0, 0, 1, 1] = 20.0  # the up-left neighbour of (2, 2): seen there after the down-right shift
    p = tta_logits(Pixel(), img, shift=1).exp()
    assert abs(p[0, 0].item() - (0.5 * 0.5 + 0.25 * 0.5 + 0.25 * 1.0)) < 1e-4


def test_evaluate_with_shift_tta_counts_every_image():
    net = create_model("resnet20").eval()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (10,))
    res = evaluate(
        net, [(images, labels)], mean=[0.5] * 3, std=[0.25] * 3, device=torch.device("cpu"), tta_flip=True, tta_shift=2
    )
    assert res["count"] == 10 and 0.0 <= res["top1"] <= 100.0


def test_bias_lr_scale_groups():
    net = create_model("speednet")
    cfg = TrainConfig(arch="speednet", lr=0.5, weight_decay=1e-3, bias_lr_scale=64)
    opt = build_optimizer(net, cfg)
    weights, biases = opt.param_groups
    assert weights["lr"] == 0.5 and weights["weight_decay"] == 1e-3
    assert biases["lr"] == 32.0 and abs(biases["weight_decay"] - 1e-3 / 64) < 1e-12
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in biases["params"])
    # frozen parameters (the whitening weights, the BatchNorm scales) are not optimised
    n_trained = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert (
        n_trained
        == sum(p.numel() for p in net.parameters() if p.requires_grad)
        < sum(p.numel() for p in net.parameters())
    )
    plain = build_optimizer(net, TrainConfig(arch="speednet", lr=0.5)).param_groups
    assert len(plain) == 1 and plain[0]["lr"] == 0.5


def test_malloc_setting():
    # (this tunes the pytest process itself, as any training run in it would)
    state = tune_malloc("auto")
    assert state == malloc_state()
    assert state == ("tuned" if __import__("sys").platform.startswith("linux") else "default")


@needs_fmnist
def test_training_speednet_sets_whitening_from_the_data(tmp_path, capsys):
    run = tmp_path / "run"
    cmd = (
        "-a speednet --dataset fashion-mnist --train-subset 256 --test-subset 128 --train-batch 128 "
        "--test-batch 128 --epochs 1 --lr 0.2 --bias-lr-scale 8 --tta-flip --tta-shift 1 --seed 0 "
        "--plot off --tensorboard off"
    )
    assert main(["train", *shlex.split(cmd), "-c", str(run)]) == 0
    state = safe_load(run / "checkpoint.pth.tar")
    assert bool(state["state_dict"]["whitened"])
    w = state["state_dict"]["whiten.weight"]  # built for the 1-channel images: 1 * 2 * 2 * 2 filters
    assert w.shape == (8, 1, 2, 2) and torch.equal(w[4:], -w[:4]) and w.abs().sum() > 0
    assert state["config"]["tta_shift"] == 1
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoint.pth.tar"), "--tta-flip", "--tta-shift", "1", "--limit", "300"]) == 0
    out = capsys.readouterr().out
    assert "shift TTA 1px" in out and "(300 images" in out
    assert main(["eval", str(run / "checkpoint.pth.tar"), "--tta-shift", "32"]) == 2
    assert "--tta-shift must be in [0, 32)" in capsys.readouterr().err
    # SpeedNet's global pool takes other sizes: 24-pixel training crops
    cmd2 = cmd.replace("--epochs 1", "--epochs 1 --train-crop 24 --tta-shift 0")
    assert main(["train", *shlex.split(cmd2), "-c", str(tmp_path / "crop")]) == 0


@needs_fmnist
def test_tta_epochs_last_uses_tta_only_in_the_last_evaluation(tmp_path, monkeypatch):

    calls = []
    real = train_mod.evaluate

    def spy(model, batches, **kw):
        calls.append((kw["tta_flip"], kw["tta_shift"]))
        return real(model, batches, **kw)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    cmd = (
        "-a resnet20 --dataset fashion-mnist --train-subset 128 --test-subset 64 --train-batch 64 "
        "--test-batch 64 --epochs 3 --tta-flip --tta-shift 2 --tta-epochs last --seed 0 --plot off "
        "--tensorboard off"
    )
    assert main(["train", *shlex.split(cmd), "-c", str(tmp_path / "run")]) == 0
    assert calls == [(False, 0), (False, 0), (True, 2)]


def test_speednet_forward_backward_and_frozen_parts():
    for num_classes in (10, 100):
        net = create_model("speednet", num_classes=num_classes)
        net.data_init(torch.randn(16, 3, 32, 32))
        out = net(torch.randn(4, 3, 32, 32))
        assert out.shape == (4, num_classes) and torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        for name, p in net.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
            else:  # the whitening filters and the BatchNorm scales stay as set
                assert p.grad is None and (
                    name == "whiten.weight" or name.endswith("norm1.weight") or name.endswith("norm2.weight")
                ), name
    # grayscale input (1 channel) gets 1 * 2 * 2 * 2 = 8 whitening filters
    gray = create_model("speednet").__class__(in_channels=1)
    gray.data_init(torch.randn(8, 1, 32, 32))
    assert gray.whiten.weight.shape == (8, 1, 2, 2)


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_compile_model_uses_the_two_pass_variance_and_matches_eager(tmp_path, monkeypatch):
    """compile_model's generated code computes the BatchNorm variance without Welford's update (plain
    torch.compile uses it for these 32 x 16 x 16 = 8,192-element reductions), gives the eager step's
    outputs, gradients and running statistics, and leaves other compilations alone: the global
    setting, and inductor's cache (a fresh one here), which must not serve one kind of code to the
    other compilation."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    eager = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    x = torch.randn(32, 3, 16, 16) * 3 + 1
    y = torch.randint(0, 4, (32,))

    def train_step(m):
        out = m(x)
        nn.functional.cross_entropy(out, y).backward()
        return out

    default = inductor_config.cpp.use_two_step_variance_threshold
    twin = copy.deepcopy(eager)
    out, code = run_and_get_code(train_step, compile_model(twin, "cpu"))
    _, plain_code = run_and_get_code(train_step, torch.compile(copy.deepcopy(eager)))
    assert inductor_config.cpp.use_two_step_variance_threshold == default
    ours, plain = ("".join(c).lower() for c in (code, plain_code))
    assert "welford" in plain
    assert ours and "welford" not in ours
    torch.testing.assert_close(out, train_step(eager), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(eager.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(twin[1].running_mean, eager[1].running_mean)
    torch.testing.assert_close(twin[1].running_var, eager[1].running_var)


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_compile_model_keeps_inductor_reductions_above_the_measured_size(tmp_path, monkeypatch):
    """Above 131,072 elements (here 136 x 32 x 32 = 139,264) compile_model's code keeps inductor's
    own Welford variance: only the measured sizes are changed."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    assert 136 * 32 * 32 > TWO_STEP_VARIANCE_THRESHOLD
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4096, 2))
    x, y = torch.randn(136, 3, 32, 32), torch.randint(0, 2, (136,))
    _, code = run_and_get_code(lambda: nn.functional.cross_entropy(compile_model(m, "cpu")(x), y).backward())
    assert "welford" in "".join(code).lower()


@needs_fmnist
def test_compiled_training_checkpoint_evaluates_to_the_logged_accuracy(tmp_path, capsys, monkeypatch):
    """--compile through the Trainer (fp32): the checkpoint holds the plain model's keys (no
    _orig_mod.), and `torchcls eval`, uncompiled, reads it and gets the run's last accuracy, to
    within one image of the run's 2,000 test images (the compiled kernels may round differently)."""
    # a cache of its own: inductor's cache key does not include ATEN_CPU_CAPABILITY, so code cached by a run
    # under another capability could be served here (seen: NaN losses with avx2 after avx512 code)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    run = tmp_path / "run"
    cmd = (
        "-a resnet --depth 8 --dataset fashion-mnist --train-subset 1024 --test-subset 2000 --epochs 1 "
        "--amp off --compile --seed 0 --plot off --tensorboard off"
    )
    assert main(["train", *shlex.split(cmd), "-c", str(run)]) == 0
    state = safe_load(run / "checkpoint.pth.tar")
    assert state["config"]["compile"] is True
    assert state["state_dict"] and not any(k.startswith("_orig_mod.") for k in state["state_dict"])
    logged = json.loads((run / "results.json").read_text())["final"]["top1"]
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoint.pth.tar"), "--json", "--limit", "2000"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["count"] == 2000 and res["top1"] == pytest.approx(logged, abs=0.051)


def test_in_channels_reaches_only_the_builders_that_take_it():
    """create_model passes the data's channel count to builders with an `in_channels` argument
    (SpeedNet's); the others stay RGB models, fed grayscale repeated to 3 channels."""
    mini = create_model("speednet_mini", in_channels=1)
    assert input_channels(mini) == 1 and mini.whiten.weight.shape[1] == 1
    assert input_channels(create_model("speednet_mini")) == 3
    res = create_model("resnet20", in_channels=1)
    assert input_channels(res) == 3 and res.conv1.weight.shape[1] == 3
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert prepare(x, (0.5,), (0.25,), False, channels=1).shape == (4, 1, 28, 28)
    assert prepare(x, (0.5,), (0.25,), False).shape == (4, 3, 28, 28)
    with torch.no_grad():
        assert mini.eval()(prepare(x, (0.5,), (0.25,), False, channels=input_channels(mini))).shape == (4, 10)


@needs_fmnist
def test_bench_speednet_mini_on_grayscale_against_the_reference(capsys):
    """The reference loop feeds a 1-channel model 1-channel tensors (no RGB conversion)."""
    tiny = "-a speednet_mini -d fashion-mnist --train-subset 128 --test-subset 64 --train-batch 32 --test-batch 32 "
    tiny += "--steps 2 --windows 1 --warmup 1 --device cpu --vs-reference -j 0 --eval"
    assert main(["bench", *shlex.split(tiny)]) == 0
    assert "ratio ours/reference" in capsys.readouterr().out
