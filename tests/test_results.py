"""`torchcls results`: the original's table beside our runs, in four formats, from summary files and run
folders; README.md's and docs/RESULTS.md's tables are its markdown output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from torchcls.cli import main
from torchcls.commands import results as R
from torchcls.config import load_recipe
from torchcls.errors import UserError
from torchcls.report.original import ROWS

ROOT = Path(__file__).resolve().parents[1]
SUMMARIES = ROOT / "docs" / "results"
CELLS = sum(len(r.datasets) for r in ROWS)  # 17 CIFAR rows x 2 data sets + 2 ImageNet rows


def generated_markdown() -> str:
    return R.render(R.table(R.load_summaries(SUMMARIES, [])), "markdown")


@pytest.mark.parametrize("doc", R.DOC_FILES)
def test_committed_tables_are_the_generated_one(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert R.BEGIN in text and R.END in text, f"{doc} lacks the generated table's markers"
    assert R.section(text) == generated_markdown(), (
        f"{doc}'s results table differs from `torchcls results --format markdown`; regenerate it with "
        "`.venv/bin/torchcls results --update-docs` from the repository root"
    )


def fake_run(folder: Path, recipe: str | None, top1: float, **config) -> Path:
    """A run folder as engine/train.py leaves it (results.json; no weights needed)."""
    folder.mkdir(parents=True)
    planned = load_recipe(recipe)["epochs"] if recipe else 3  # the recipe's epochs unless the test says otherwise
    cfg = {"dataset": "cifar10", "arch": "resnet20", "recipe": recipe, "tta_flip": False, "tta_shift": 0,
           "epochs": planned, **config}  # fmt: skip
    res = {
        "dataset": cfg["dataset"], "arch": cfg["arch"], "epochs": cfg["epochs"], "seed": 0,
        "final": {"top1": top1, "top5": 99.0, "loss": 0.3, "set": "test"}, "best": {"top1": top1, "set": "test"},
        "wall_time_s": 3725.4, "train_images_per_s": 900.0,
        "hardware": {"device": "cpu", "cpu": "AMD EPYC", "cpu_isa": "AVX-512, AVX512-BF16", "cpu_count": 2},
        "config": cfg, "finished": "2026-12-01T14:30:00Z",
        "argv": ["/x/bin/torchcls", "train", "--recipe", str(recipe)],
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(res))
    return folder


def test_every_cell_is_listed_and_unmeasured_ones_say_so(tmp_path):
    lines = R.table([])
    assert len(lines) == CELLS == 36
    for line in lines:
        assert line["top1"] == line["wall_time"] == line["hardware"] == line["date"] == "not measured"
        assert line["recipe"].startswith("original/")
    by = {(x["row_key"], x["dataset"]): x for x in lines}
    assert (
        by[("resnet110", "CIFAR-10")]["params"] == "1,704,154"
        and by[("resnet110", "CIFAR-10")]["original_params"] == "1.70M"
    )
    assert by[("resnet110", "CIFAR-100")]["original_params"] == "not given"  # the original counted on CIFAR-10
    assert by[("resnet18", "ImageNet")]["original_top1"].startswith("69.91% (error 30.09%")


def test_run_folders_summaries_and_formats(tmp_path, capsys):
    a = fake_run(tmp_path / "a", "original/cifar10-resnet20", 91.75)
    b = fake_run(tmp_path / "b", "cifar10-resnet20-40ep", 92.5, tta_flip=True, tta_shift=1)
    # no recipe: the row is found by the network (the published "ResNet-110" is the 164-layer bottleneck net)
    c = fake_run(tmp_path / "c", None, 90.0, arch="resnet", depth=164, block_name="Bottleneck")
    d = fake_run(tmp_path / "d", None, 90.0, arch="resnet", depth=110)  # the real ResNet-110: no row of the table
    with pytest.raises(UserError, match="none of the original table's rows"):
        R.summary_of_run(d)
    with pytest.raises(UserError, match="no results.json"):
        R.summary_of_run(tmp_path)

    assert main(["results", str(a), str(b), str(c), "--summaries", "none", "--format", "json"]) == 0
    lines = json.loads(capsys.readouterr().out)
    assert len(lines) == CELLS + 1  # ResNet-20 on CIFAR-10 has two runs: two lines instead of one
    r20 = [x for x in lines if x["row_key"] == "resnet20" and x["dataset"] == "CIFAR-10"]
    assert [x["recipe"] for x in r20] == ["original/cifar10-resnet20", "cifar10-resnet20-40ep"]  # the row's order
    assert (r20[0]["top1"], r20[0]["reaches"], r20[0]["wall_time"]) == ("91.75%", "yes", "62 min 05 s")
    assert r20[0]["command"] == "torchcls train --recipe original/cifar10-resnet20"
    assert r20[0]["hardware"] == "AMD EPYC, AVX-512, AVX512-BF16, 2 CPUs" and r20[0]["date"] == "2026-12-01"
    assert (r20[1]["top1"], r20[1]["reaches"]) == ("92.50% (6-view TTA; single view not recorded)", "not known")
    r110 = next(x for x in lines if x["row_key"] == "resnet110" and x["dataset"] == "CIFAR-10")
    assert (r110["top1"], r110["reaches"], r110["recipe"]) == ("90.00%", "no", "flags (see command)")

    # a shortened run says so, and one on part of the data is not compared with the original
    e = fake_run(tmp_path / "e", "original/cifar10-alexnet", 80.0, epochs=2, train_subset=500, test_subset=100)
    line = next(x for x in R.table([R.summary_of_run(e)]) if x["row_key"] == "alexnet" and x["dataset"] == "CIFAR-10")
    assert line["top1"] == "80.00% (trained on 500 images; tested on 100 images; 2 epochs, not the recipe's 164)"
    assert line["reaches"] == "not comparable"

    for fmt in ("terminal", "markdown", "csv"):
        assert main(["results", str(a), "--summaries", "none", "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "not measured" in out and "91.75%" in out
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(out)))
            assert len(rows) == CELLS and {"row", "params_exact", "command", "wall_time_s"} <= rows[0].keys()
        if fmt == "markdown":
            assert out.startswith("| row | data set | params (ours) |") and "91.75% [1]" in out
            assert "1. `torchcls train --recipe original/cifar10-resnet20`" in out

    # --save writes summary files; read back (as --summaries), they give the same lines
    saved = tmp_path / "summaries"
    argv = ["results", str(a), str(c), "--save", str(saved), "--summaries", "none", "--conditions", "quiet machine"]
    assert main(argv) == 0
    capsys.readouterr()
    files = sorted(p.name for p in saved.glob("*.json"))
    assert files == ["cifar10-resnet110-flags-2026-12-01-seed0.json", "original-cifar10-resnet20-2026-12-01-seed0.json"]
    again = R.table(R.load_summaries(saved, []))
    assert [x["conditions"] for x in again if x["command"]] == ["quiet machine"] * 2
    assert again == R.table([{**R.summary_of_run(x), "conditions": "quiet machine"} for x in (a, c)])
    assert main(["results", "--summaries", str(saved), "--format", "markdown"]) == 0
    assert "1. `torchcls train --recipe original/cifar10-resnet20`; quiet machine" in capsys.readouterr().out
    summary = json.loads((saved / files[1]).read_text())
    assert summary["source"] == "results.json" and summary["row"] == "resnet20" and summary["config"]["recipe"]


def test_update_docs_rewrites_only_the_marked_part(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    for name in R.DOC_FILES:
        (tmp_path / name).write_text(f"# {name}\nbefore\n{R.BEGIN}\nold table\n{R.END}\nafter\n")
    assert main(["results", "--update-docs", "--summaries", "none"]) == 0
    for name in R.DOC_FILES:
        text = (tmp_path / name).read_text()
        assert text.startswith(f"# {name}\nbefore\n{R.BEGIN}\n| row |") and text.endswith(f"{R.END}\nafter\n")
        assert R.section(text) == R.render(R.table([]), "markdown")
    (tmp_path / "README.md").write_text("no markers\n")
    assert main(["results", "--update-docs", "--summaries", "none"]) == 2
    assert "must hold the markers" in capsys.readouterr().err


def test_committed_summaries_state_their_source():
    files = sorted(SUMMARIES.glob("*.json"))
    assert files
    for f in files:
        s = json.loads(f.read_text())
        assert s["source"] == "results.json" or s["source"].startswith("docs/RESULTS.md"), f.name
        assert s["command"] and s["recipe"] and s.get("wall_time_s") and s["hardware"].get("cpu"), f.name
        assert "state_dict" not in json.dumps(s)  # summaries, not checkpoints
