"""`torchcls models`: parameter and FLOP rows, the output formats, tv_ pretrained weights."""

import argparse
import csv
import io
import json
import os

import pytest
import torch
import torch.nn as nn
import torchvision

from torchcls.cli import main
from torchcls.commands import models as summary
from torchcls.models import create_model, list_models

SMALL = ["resnet20", "pnasnet_a"]

# ResNet-20 for 32x32 input, in multiply-accumulates (MACs) of its convolutions and head:
#   stem 3->16 3x3 at 32x32                       3*16*9*1024  =    442,368
#   stage 1: 6 convs 16->16 3x3 at 32x32      6 * 16*16*9*1024 = 14,155,776
#   stage 2: 32x(16|32)x9 at 16x16 + 1x1 16->32 projection      = 12,976,128 + 131,072
#   stage 3: 64x(32|64)x9 at 8x8  + 1x1 32->64 projection       = 12,976,128 + 131,072
#   head 64->10                                                 =        640
# = 40,813,184 MACs; the counter reports 2 FLOPs per MAC (and counts no element-wise ops).
RESNET20_FLOPS = 2 * 40_813_184  # 81,626,368


@pytest.fixture(scope="module")
def rows():
    return summary.model_rows(SMALL)


def test_rows_have_the_columns(rows):
    assert [r["name"] for r in rows] == SMALL
    for r in rows:
        assert set(r) == set(summary.COLUMNS)
        assert r["dataset"] == "cifar" and r["input_size"] == 32
        assert isinstance(r["params"], int)
        assert r["params_m"] == pytest.approx(r["params"] / 1e6, abs=1e-4)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet20"]["params"] == 272_474
    assert by_name["pnasnet_a"]["params"] == 130_646
    assert by_name["pnasnet_a"]["family"] == "pnasnet"


def test_resnet20_flops(rows):
    assert summary.count_model("resnet20") == (272_474, RESNET20_FLOPS)
    gflops = next(r["gflops"] for r in rows if r["name"] == "resnet20")
    assert 0.0815 < gflops < 0.0817


def test_meta_count_equals_a_real_run():
    """The shapes-only (meta device) count gives what a real CPU forward pass counts."""
    model = create_model("resnet20", num_classes=10)
    assert summary.count_params_and_flops(model, 32, "cpu") == summary.count_model("resnet20")


def test_falls_back_to_a_real_run(monkeypatch):
    """A model that cannot be built or run on the meta device is counted on the CPU."""
    count, devices = summary.count_params_and_flops, []

    def no_meta(model, size, device):
        devices.append(device)
        if device == "meta":
            raise NotImplementedError("Cannot copy out of meta tensor; no data!")
        return count(model, size, device)

    monkeypatch.setattr(summary, "count_params_and_flops", no_meta)
    assert summary.count_model("resnet20") == (272_474, RESNET20_FLOPS)
    assert devices == ["meta", "cpu"]


def test_imagenet_row():
    (row,) = summary.model_rows(["resnet18"])
    assert (row["dataset"], row["input_size"], row["params"]) == ("imagenet", 224, 11_689_512)
    assert 3.6 < row["gflops"] < 3.65  # 1.814 GMACs, the usual figure for ResNet-18


def test_json_round_trip(rows):
    assert json.loads(summary.format_table(rows, "json")) == rows


def test_csv_round_trip(rows):
    parsed = list(csv.DictReader(io.StringIO(summary.format_table(rows, "csv"))))
    assert [r["name"] for r in parsed] == SMALL
    assert list(parsed[0]) == list(summary.COLUMNS)
    for got, want in zip(parsed, rows, strict=True):
        assert int(got["params"]) == want["params"]
        assert float(got["gflops"]) == want["gflops"]


def test_markdown_table(rows):
    lines = summary.format_table(rows, "markdown").splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0].startswith("| model |") and "GFLOPs" in lines[0]
    assert set(lines[1]) <= set("|-: ") and "---" in lines[1]
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert "272,474" in lines[2]


def test_text_table(rows):
    lines = summary.format_table(rows, "text").splitlines()
    assert lines[0].split()[0] == "model" and set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("resnet20 ")
    with pytest.raises(ValueError, match="unknown format"):
        summary.format_table(rows, "xml")


def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    summary.add_arguments(parser)
    code = summary.run(parser.parse_args(argv))
    return code, capsys.readouterr()


def test_run_command(capsys):
    code, out = _run(["resnet20", "--format", "json"], capsys)
    assert code == 0 and [r["name"] for r in json.loads(out.out)] == ["resnet20"]
    code, out = _run(["resnet20"], capsys)
    assert code == 0 and "FlopCounterMode" in out.out and "resnet20" in out.out
    assert main(["models", "resnet21"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchcls: error: unknown model") and len(err.strip().splitlines()) == 1


def test_default_names_leave_out_torchvision():
    names = summary.default_names()
    assert "resnet20" in names and "resnet18" in names
    assert not any(n.startswith("tv_") for n in names)
    assert all(
        not n.startswith("tv_") and n in list_models("imagenet") for n in summary.default_names(dataset="imagenet")
    )
    assert any(n.startswith("tv_") for n in summary.default_names(include_torchvision=True))


def test_tv_pretrained_from_local_cache(tmp_path, monkeypatch):
    """pretrained=True loads the cached default weights, never downloads, and swaps the head."""

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match="checkpoints"):
        create_model("tv_squeezenet1_1", num_classes=5, pretrained=True)

    reference = torchvision.models.squeezenet1_1()
    url = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / os.path.basename(url))

    model = create_model("tv_squeezenet1_1", num_classes=1000, pretrained=True)
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k

    model = create_model("tv_squeezenet1_1", num_classes=5, pretrained=True)
    head = model.classifier[1]
    assert isinstance(head, nn.Conv2d) and head.out_channels == 5
    assert torch.equal(model.features[0].weight, reference.features[0].weight)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)
