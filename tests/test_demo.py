"""scripts/demo.py (the main job, ``bash scripts/run.sh``): its pipeline on a tiny configuration, and its flags.

The smoke test runs every step on two small images — one Set5 image (mask density ≈ 0.7: ``auto`` runs the dense
graph) and a flat 96×160 crop of a Photos2K photo (density ≈ 0.01: the row graph) — with one warm-up and one
timed round, on the CARN-M x4 exports ``tests.onnx_exports`` shares with the other ONNX tests (exported once per
pytest process: about a minute when this file runs alone), and checks the report files and their keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from amsr.io.images import read_rgb8, save_png
from tests.conftest import load_script, weight_file

ROOT = Path(__file__).resolve().parent.parent

ROW_KEYS = {"set", "image", "lr_size", "density", "path", "psnr_y_dense", "psnr_y_amsr", "delta_psnr_db",
            "psnr_vs_dense_db", "identical_to_dense", "gmacs_dense", "gmacs_amsr", "gmacs_ratio", "dense_ms",
            "amsr_ms", "ratio", "dense_ms_runs", "amsr_ms_runs", "slower", "quality_loss"}
MEAN_KEYS = {"images", "density", "paths", "psnr_y_dense", "psnr_y_amsr", "delta_psnr_db", "psnr_vs_dense_db",
             "gmacs_dense", "gmacs_amsr", "gmacs_ratio", "dense_ms", "amsr_ms", "ratio", "slower", "quality_loss"}


def _demo() -> ModuleType:
    return load_script("demo")


def _tiny_data(data_dir: Path, dest: Path) -> Path:
    """A data folder with Set5/x4's first image and a flat LR crop (and its HR crop) of Photos2K img_001."""
    set5 = data_dir / "Set5" / "x4"
    photo = data_dir / "Photos2K" / "x4"
    for folder, name in ((set5, "img_001.png"), (photo, "img_001.png")):
        for side in ("LR", "HR"):
            if not (folder / side / name).is_file():
                pytest.skip(f"{folder / side / name} not found (set AMSR_DATA_DIR)")
    for side in ("LR", "HR"):
        save_png(dest / "Set5" / "x4" / side / "img_001.png", read_rgb8(set5 / side / "img_001.png"))
    lr, hr = read_rgb8(photo / "LR" / "img_001.png"), read_rgb8(photo / "HR" / "img_001.png")
    save_png(dest / "Photos2K" / "x4" / "LR" / "flat.png", np.ascontiguousarray(lr[:96, :160]))
    save_png(dest / "Photos2K" / "x4" / "HR" / "flat.png", np.ascontiguousarray(hr[:96 * 4, :160 * 4]))
    return dest


@pytest.fixture(scope="module")
def carn_m_graphs(weights_dir: Path) -> tuple[Path, Path]:
    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon", "polygraphy"):
        pytest.importorskip(module, reason=f"needs {module} (pip install 'amsr[onnx]')")
    from tests.onnx_exports import exported, exported_blend

    weights = weight_file(weights_dir, "carn_m.pth")
    return exported_blend(weights), exported("dense", weights)


def test_demo_pipeline_writes_its_report(carn_m_graphs: tuple[Path, Path], data_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    demo = _demo()
    out = tmp_path / "demo"
    cfg = demo.DemoConfig(out=out, photos=("flat.png",), set5=1, repeats=1, small_repeats=1, warmup=1, threads=1,
                          parity_photos=1, blocks=2, data=_tiny_data(data_dir, tmp_path / "data"),
                          graphs=carn_m_graphs)
    report = demo.run_demo(cfg)

    printed = capsys.readouterr().out
    for step in ("[1/4] export", "[2/4] parity", "[3/4] upscale", "[4/4] score"):
        assert step in printed
    assert "PSNR-Y dense" in printed and "flat.png" in printed and "img_001.png" in printed

    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert {"model", "scale", "operating_point", "graphs", "parity", "timing", "sets", "per_image", "shortfalls",
            "contact_sheet", "wall_s"} <= set(on_disk)
    assert on_disk["graphs"]["execution"] == "rows"
    assert [p["graph"] for p in on_disk["parity"]] == ["accelerated", "dense"]
    assert all(p["passed"] for p in on_disk["parity"])
    rows = {(r["set"], r["image"]): r for r in on_disk["per_image"]}
    assert set(rows) == {("Photos2K", "flat.png"), ("Set5", "img_001.png")}
    for r in rows.values():
        assert ROW_KEYS <= set(r)
        assert len(r["dense_ms_runs"]) == len(r["amsr_ms_runs"]) == 1
    flat, set5 = rows["Photos2K", "flat.png"], rows["Set5", "img_001.png"]
    assert flat["path"] == "rows" and flat["density"] <= on_disk["dense_above_density"]
    assert flat["gmacs_amsr"] < flat["gmacs_dense"]
    assert set5["path"] == "dense" and set5["density"] > on_disk["dense_above_density"]
    assert set5["identical_to_dense"] and set5["gmacs_amsr"] == set5["gmacs_dense"]
    assert set(on_disk["sets"]) == {"Photos2K", "Set5"}
    for m in on_disk["sets"].values():
        assert MEAN_KEYS <= set(m)

    md = (out / "report.md").read_text()
    assert "| set | image |" in md and "## Where it falls short" in md and "worst_blocks.png" in md
    for (set_name, image) in rows:
        assert f"| {set_name} | {image} |" in md

    sheet = read_rgb8(out / "worst_blocks.png")
    assert sheet.ndim == 3 and sheet.shape[0] > 100 and sheet.shape[1] > 4 * 128
    assert on_disk["contact_sheet"]["blocks"] and len(on_disk["contact_sheet"]["blocks"]) <= 2
    for kind in ("accelerated", "dense"):
        assert Path(on_disk["graphs"]["copies"][kind]).is_file()


def test_shortfalls_are_named_in_plain_words() -> None:
    """A slower image and one that lost more than 0.05 dB are named, in the table's note and the summary."""
    demo = _demo()
    base = {"set": "Photos2K", "lr_size": [10, 10], "density": 0.3, "path": "rows", "psnr_y_dense": 40.0,
            "psnr_vs_dense_db": 50.0, "identical_to_dense": False, "gmacs_dense": 2.0, "gmacs_amsr": 1.0,
            "gmacs_ratio": 0.5, "dense_ms": 100.0}
    rows = []
    for image, amsr_ms, delta in (("fine.png", 50.0, -0.01), ("slow.png", 120.0, 0.0), ("lossy.png", 50.0, -0.2)):
        r = {**base, "image": image, "amsr_ms": amsr_ms, "ratio": amsr_ms / 100.0, "psnr_y_amsr": 40.0 + delta,
             "delta_psnr_db": delta}
        r["slower"], r["quality_loss"] = r["ratio"] > 1.0, delta < -demo.QUALITY_BUDGET_DB
        rows.append(r)
    means = demo.set_means(rows)
    assert not means["Photos2K"]["slower"] and means["Photos2K"]["quality_loss"]  # Σ 220 vs 300 ms; −0.07 dB
    lines = demo.shortfalls(rows, means)
    assert len(lines) == 3
    assert "slower than dense: Photos2K slow.png" in lines[0] and "ratio 1.200" in lines[0]
    assert "quality fell by more than 0.05 dB: Photos2K lossy.png" in lines[1] and "-0.200 dB" in lines[1]
    assert "quality fell by more than 0.05 dB: Photos2K (mean of 3)" in lines[2] and "-0.070 dB" in lines[2]
    cells = demo.table_rows(rows, means)
    notes = {c[1]: c[-1] for c in cells}
    assert notes["fine.png"] == "" and "SLOWER than dense (1.200×)" in notes["slow.png"]
    assert "LOST 0.20 dB" in notes["lossy.png"]
    assert "slow.png" in demo.markdown_table(cells) and "SLOWER" in demo.text_table(cells)
