"""``syn2real enhance``: tiled = whole image, layout kept, atomic and resumable, scores, the preprocessing stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_png
from PIL import Image

from syn2real.core.luminance import LUMA
from syn2real.data.transforms import build_transform
from syn2real.enhance import (
    LowLightEnhance, brightness, enhance_array, enhance_folder, evaluate_folders, load_enhancer,
)
from syn2real.metrics.enhancement import gamma_correction, histogram_equalization, image_scores
from syn2real.models.enlighten import (
    AttentionUNet, EnlightenDiscriminatorConfig, EnlightenGeneratorConfig, enhance_tiled,
)
from syn2real.models.perceptual import FeatureExtractorConfig

GEN = EnlightenGeneratorConfig(ngf=4, depth=4)


@pytest.fixture(scope="module")
def enlighten_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from syn2real.methods import EnlightenGAN

    torch.manual_seed(0)
    method = EnlightenGAN(
        generator=GEN, discriminator=EnlightenDiscriminatorConfig(ndf=4),
        perceptual=FeatureExtractorConfig("vgg16", "random"),
    )
    with torch.no_grad():  # a visible, deterministic brightening: latent = +0.8 everywhere
        method.generator.out.weight.zero_()
        method.generator.out.bias.fill_(0.8)
    checkpoint = {"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}
    method.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("ckpt") / "enlightengan.ckpt"
    torch.save(checkpoint, path)
    return path


def _dark(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50, size=(h, w, 3), dtype=np.uint8)


def test_tiled_enhancement_equals_whole_image() -> None:
    torch.manual_seed(0)
    g = AttentionUNet(ngf=8, depth=4).eval()
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.rand(1, 3, 150, 230) * 2 - 1
        whole = g(x).clamp(-1, 1)
        tiled = enhance_tiled(g, x, tile=64, overlap=16)
    assert tiled.shape == x.shape
    assert float((tiled - whole).abs().max()) < 1e-4  # far below one 8-bit level (1/127.5)
    with pytest.raises(ValueError, match="must exceed"):
        enhance_tiled(g, x, tile=32, overlap=16)


def test_checkpoint_round_trip_and_errors(enlighten_ckpt: Path, tmp_path: Path) -> None:
    ckpt = torch.load(enlighten_ckpt, weights_only=True)
    assert not any(k.startswith("perceptual.") for k in ckpt["state_dict"]), "the frozen extractor is not stored"
    g = load_enhancer(enlighten_ckpt)
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    x = torch.full((1, 3, 8, 8), -1.0)  # black: attention 1, output -1 + 0.8
    assert torch.allclose(g(x), torch.full_like(x, -0.2), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="EnlightenGAN"):
        load_enhancer(tmp_path / "missing.ckpt")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="no EnlightenGAN generator"):
        load_enhancer(other)


def test_enhance_folder_keeps_layout_is_resumable_and_reports_bad_files(enlighten_ckpt: Path, tmp_path: Path) -> None:
    src = tmp_path / "night"
    write_png(src / "a.png", _dark(0))
    write_png(src / "sub" / "b.png", _dark(1, 33, 70))
    Image.fromarray(_dark(2)).save(src / "c.jpg", quality=95)
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "enhanced"
    summary = enhance_folder(enlighten_ckpt, src, out, tile=32, overlap=8, device="cpu", progress=False)
    assert (summary.enhanced, summary.skipped, summary.failed) == (3, 0, ["broken.png"])
    b = np.array(Image.open(out / "sub" / "b.png"))
    assert b.shape == (33, 70, 3) and (out / "c.jpg").is_file()
    # tiled (tile 32 < image) output equals the whole-image output of the generator, to 8 bits
    whole = enhance_array(load_enhancer(enlighten_ckpt), _dark(1, 33, 70), tile=4096)
    assert np.abs(b.astype(int) - whole.astype(int)).max() <= 1
    assert brightness(b) > brightness(_dark(1, 33, 70)) + 0.2
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "enhance_summary.json").read_text())["failed"] == ["broken.png"]
    again = enhance_folder(enlighten_ckpt, src, out, device="cpu", progress=False)
    assert (again.enhanced, again.skipped) == (0, 3)
    with pytest.raises(ValueError, match="must not be --input"):
        enhance_folder(enlighten_ckpt, src, src / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        enhance_folder(enlighten_ckpt, tmp_path / "nothing", out, progress=False)


def test_enhance_command_scores_against_references(
    enlighten_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syn2real.command import main

    low, ref = tmp_path / "low", tmp_path / "reference"
    rng = np.random.default_rng(0)
    for i in range(2):
        clean = rng.integers(60, 200, size=(32, 40, 3), dtype=np.uint8)
        write_png(ref / f"{i}.png", clean)
        write_png(low / f"{i}.png", (clean * 0.2).astype(np.uint8))
    out = tmp_path / "out"
    main(["enhance", "--ckpt", str(enlighten_ckpt), "--input", str(low), "--output", str(out), "--device", "cpu",
          "--no_progress", "--reference", str(ref), "--figure", str(tmp_path / "examples.png")])
    scores = json.loads((out / "enhance_eval.json").read_text())
    assert set(scores) == {"input", "gamma", "histeq", "enlightengan"}
    assert scores["enlightengan"]["psnr_mean"] > scores["input"]["psnr_mean"]  # +0.8 brightening helps here
    per_image = json.loads((out / "enhance_eval_per_image.json").read_text())
    assert set(per_image["gamma"]) == {"0", "1"}
    assert (tmp_path / "examples.png").stat().st_size > 0
    assert "enlightengan" in capsys.readouterr().out


def test_baselines_and_scores() -> None:
    dark = np.full((8, 8, 3), 30, np.uint8)
    dark[:4] = 10
    lifted = gamma_correction(dark)
    mean = (lifted.astype(float) / 255 @ np.array(LUMA)).mean()
    assert 0.4 < mean < 0.6  # the mean luminance is mapped to mid-grey
    eq = histogram_equalization(dark)
    assert eq.shape == dark.shape and eq.max() == 255
    ref = np.full((8, 8, 3), 100, np.uint8)
    psnr, ssim = image_scores(np.full((8, 8, 3), 110, np.uint8), ref)
    assert psnr == pytest.approx(10 * np.log10(1 / (10 / 255) ** 2), rel=1e-6)
    assert 0 < ssim <= 1
    with pytest.raises(ValueError, match="same shape"):
        image_scores(ref[:4], ref)


def test_evaluate_folders_needs_matching_names(tmp_path: Path) -> None:
    write_png(tmp_path / "low" / "x.png", _dark(0))
    write_png(tmp_path / "ref" / "y.png", _dark(1))
    with pytest.raises(FileNotFoundError, match="no reference"):
        evaluate_folders(tmp_path / "low", tmp_path / "ref", {})


def test_low_light_enhance_as_a_preprocessing_stage(enlighten_ckpt: Path) -> None:
    pipeline = build_transform(
        [{"name": "syn2real.enhance.LowLightEnhance", "ckpt": str(enlighten_ckpt), "max_brightness": 0.25},
         {"name": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}],
        "data.target_train_transforms",
    )
    dark, bright = _dark(0), np.full((40, 56, 3), 200, np.uint8)
    out_dark = pipeline(image=dark)["image"]
    out_bright = pipeline(image=bright)["image"]
    expected = torch.from_numpy(enhance_array(load_enhancer(enlighten_ckpt), dark)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(out_dark, expected, atol=1e-5)  # dark image enhanced
    assert torch.allclose(out_bright, torch.full_like(out_bright, 200 / 127.5 - 1), atol=1e-5)  # bright passes
    grey = LowLightEnhance(str(enlighten_ckpt))(image=dark[..., :1].copy())["image"]
    assert grey.shape == (40, 56, 1) and grey.mean() > dark[..., 0].mean()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LowLightEnhance("missing.ckpt")
    with pytest.raises(ValueError, match="unknown albumentations transform"):
        build_transform([{"name": "syn2real.enhance.Nope"}])


def test_empty_input_folder_is_an_error_naming_it(enlighten_ckpt: Path, tmp_path: Path) -> None:
    from syn2real.enhance import main

    empty = tmp_path / "night"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"night contains no image files .*\.png, \.jpg"):
        enhance_folder(enlighten_ckpt, empty, tmp_path / "out", progress=False)
    with pytest.raises(SystemExit) as exit_info:  # was "enhanced 0" and status 0
        main(["--ckpt", str(enlighten_ckpt), "--input", str(empty), "--output", str(tmp_path / "out"), "--no_progress"])
    assert "syn2real enhance: --input" in str(exit_info.value.code) and str(empty) in str(exit_info.value.code)
    assert not (tmp_path / "out").exists()


def test_scoring_against_references_shows_progress_unless_no_progress(
    enlighten_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tqdm.auto

    from syn2real.enhance import main

    bars: list[tuple[str, tqdm.auto.tqdm]] = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            bars.append((kwargs.get("desc", ""), self))

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    low, ref = tmp_path / "low", tmp_path / "reference"
    for i in range(3):
        write_png(ref / f"{i}.png", np.full((16, 16, 3), 120, np.uint8))
        write_png(low / f"{i}.png", _dark(i, 16, 16))
    args = ["--ckpt", str(enlighten_ckpt), "--input", str(low), "--output", str(tmp_path / "out"), "--device", "cpu",
            "--reference", str(ref)]
    main(args)
    scoring = [b for desc, b in bars if desc == "scoring"]
    assert len(scoring) == 1 and scoring[0].total == scoring[0].n == 3
    bars.clear()
    main([*args, "--no_progress"])
    scoring = [b for desc, b in bars if desc == "scoring"]
    assert len(scoring) == 1 and scoring[0].disable
