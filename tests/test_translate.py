"""``syn2real translate``: layout kept, labels copied, atomic and resumable, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_class_tree, write_png
from PIL import Image

import syn2real.translate as translate_mod
from syn2real.methods import CyCADA
from syn2real.tasks import Classification
from syn2real.models.translator import load_generator
from syn2real.models.gan import GeneratorConfig, PatchDiscriminatorConfig
from syn2real.models.heads import NetworkConfig
from syn2real.translate import translate_folder


@pytest.fixture(scope="module")
def cycada_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    method = CyCADA(
        task=Classification(network=NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)), lambda_semantic=0.0,
        generator=GeneratorConfig(channels=1, ngf=4, n_blocks=1), discriminator=PatchDiscriminatorConfig(ndf=4),
    )
    path = tmp_path_factory.mktemp("ckpt") / "cycada.ckpt"
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = make_class_tree(tmp_path / "synthetic", ["0", "1", "2"], per_class=3)
    (root / "train_list.txt").write_text("0/000.png 0\n")
    labels = root / "labels"
    labels.mkdir()
    write_png(labels / "0.png", np.full((28, 28), 7, np.uint8))  # a label map: must be copied, never translated
    write_png(root / "2" / "wide.png", np.zeros((20, 30), np.uint8))  # another size: its own batch
    return root


def test_translates_every_image_keeps_layout_and_copies_labels(cycada_ckpt: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "translated"
    summary = translate_folder(cycada_ckpt, dataset, out, batch_size=4, device="cpu", copy=["labels/*"], progress=False)
    assert (summary.translated, summary.copied, summary.skipped, summary.failed) == (10, 2, 0, [])
    assert (out / "train_list.txt").read_text() == "0/000.png 0\n"
    assert np.array_equal(np.array(Image.open(out / "labels" / "0.png")), np.full((28, 28), 7, np.uint8))
    assert np.array(Image.open(out / "2" / "wide.png")).shape == (20, 30)
    # the written image is the generator's output, quantised to 8 bits
    gen, _ = load_generator(cycada_ckpt)
    x = torch.from_numpy(np.array(Image.open(dataset / "1" / "000.png"))).float()[None, None] / 127.5 - 1
    expected = gen(x).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)[0, 0].numpy()
    got = np.array(Image.open(out / "1" / "000.png"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert not list(out.rglob("*.tmp"))


def test_resumes_after_interruption_without_rewriting_done_files(
    cycada_ckpt: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "translated"
    real_save, written = translate_mod.save_image, []

    def crash_after_four(array: np.ndarray, path: Path) -> None:
        if len(written) == 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C (or the job was killed) mid-run
        real_save(array, path)
        written.append(path)

    monkeypatch.setattr(translate_mod, "save_image", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        translate_folder(cycada_ckpt, dataset, out, batch_size=3, device="cpu", copy=["labels/*"], progress=False)
    monkeypatch.setattr(translate_mod, "save_image", real_save)
    done = {p: p.stat().st_mtime_ns for p in written}
    assert len(done) == 4 and not list(out.rglob("*.tmp"))

    summary = translate_folder(cycada_ckpt, dataset, out, batch_size=3, device="cpu", copy=["labels/*"], progress=False)
    assert summary.translated == 10 - 4 and summary.skipped == 4 + 2  # the 4 done images and the 2 copied files
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    again = translate_folder(cycada_ckpt, dataset, out, device="cpu", progress=False)
    assert again.translated == 0 and again.skipped == 12


def test_corrupt_image_is_reported_and_the_rest_translated(cycada_ckpt: Path, dataset: Path, tmp_path: Path) -> None:
    (dataset / "1" / "broken.png").write_bytes(b"not a png")
    summary = translate_folder(cycada_ckpt, dataset, tmp_path / "out", device="cpu", copy=["labels/*"], progress=False)
    assert summary.failed == [os.path.join("1", "broken.png")] and summary.translated == 10


def test_clear_errors(cycada_ckpt: Path, dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        translate_folder(cycada_ckpt, tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="must not be --input"):
        translate_folder(cycada_ckpt, dataset, dataset / "inside")
    with pytest.raises(FileNotFoundError, match="CyCADA"):
        translate_folder(tmp_path / "missing.ckpt", dataset, tmp_path / "out")


def test_command_line(cycada_ckpt: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_out"
    proc = subprocess.run(
        [sys.executable, "-m", "syn2real.cli", "translate", "--ckpt", str(cycada_ckpt), "--input", str(dataset),
         "--output", str(out), "--copy", "labels/*", "--device", "cpu", "--no_progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "translated 10, copied 2" in proc.stdout
    assert (out / "translate_summary.json").is_file() and (out / "0" / "000.png").is_file()


def test_empty_input_folder_is_an_error_naming_it(cycada_ckpt: Path, tmp_path: Path) -> None:
    empty = tmp_path / "gta5"
    (empty / "labels").mkdir(parents=True)
    write_png(empty / "labels" / "0.png", np.zeros((4, 4), np.uint8))  # only files --copy keeps as they are
    with pytest.raises(FileNotFoundError, match=r"gta5 contains no image files outside the --copy patterns"):
        translate_folder(cycada_ckpt, empty, tmp_path / "out", copy=["labels/*"], progress=False)
    (empty / "labels" / "0.png").unlink()
    with pytest.raises(SystemExit) as exit_info:  # was "translated 0" and status 0
        translate_mod.main(["--ckpt", str(cycada_ckpt), "--input", str(empty), "--output", str(tmp_path / "out"),
                            "--no_progress"])
    message = str(exit_info.value.code)
    assert message.startswith("syn2real translate: --input") and "no image files" in message and ".png" in message
    assert not (tmp_path / "out").exists()
