"""``syn2real export``: the file carries class names, normalisation, input size and config, and
``load_exported`` rebuilds a network whose predictions equal the trained one's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_class_tree
from PIL import Image

from syn2real.adversarial.advprop import export_main_bn
from syn2real.export import load_exported, main
from syn2real.methods import SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig

NET = NetworkConfig(backbone="digits_cnn", num_classes=3, in_chans=1)


def _config(tmp_path: Path, root: Path) -> Path:
    config = {
        "model": {"class_path": "syn2real.methods.SourceOnly",
                  "init_args": {"task": {"class_path": "syn2real.tasks.Classification", "init_args": {
                      "network": {"backbone": "digits_cnn", "num_classes": 3, "in_chans": 1}}}}},
        "data": {"class_path": "syn2real.data.DomainPairDataModule", "init_args": {
            "source": {"root": str(root)}, "target": {"root": str(root)}, "image_mode": "L", "num_workers": 0,
            "batch_size": 4, "eval_transforms": [{"name": "Normalize", "mean": [0.25], "std": [0.5]}]}},
        "trainer": {"accelerator": "cpu", "logger": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_export_then_three_lines_give_the_trained_predictions(tmp_path: Path) -> None:
    root = make_class_tree(tmp_path / "digits", ["cat", "dog", "eel"], per_class=2)
    torch.manual_seed(0)
    method = SourceOnly(task=Classification(network=NET))
    with torch.no_grad():  # not the initial weights: a trained model's running BN statistics differ from 0 / 1
        for module in method.model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in method.model.state_dict().items()}}, ckpt)
    out = main(["--config", str(_config(tmp_path, root)), "--ckpt", str(ckpt), "--output", str(tmp_path / "m.pt")])

    # the lines of the README
    net, info = load_exported(out)
    images = torch.stack([torch.from_numpy(np.array(Image.open(p)))[None] for p in sorted(root.rglob("*.png"))])
    names = [info.class_names[i] for i in net(info.preprocess(images)).argmax(1)]

    assert not net.training and info.class_names == ["cat", "dog", "eel"] and info.task == "classification"
    assert info.mean == (0.25,) and info.std == (0.5,) and info.input_size == (1, 28, 28)
    assert info.network["backbone"] == "digits_cnn" and info.eval_transforms[0]["name"] == "Normalize"
    with torch.no_grad():
        expected = method.model.eval()((images.float() / 255 - 0.25) / 0.5)
        assert torch.equal(net(info.preprocess(images)), expected)
    assert names == [["cat", "dog", "eel"][i] for i in expected.argmax(1)]
    payload = torch.load(out, weights_only=True)
    assert set(payload) >= {"format", "state_dict", "network", "class_names", "mean", "std", "input_size"}


def test_load_exported_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="syn2real export"):
        load_exported(tmp_path / "missing.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt has no \['state_dict', 'network'\]"):
        load_exported(tmp_path / "other.pt")
    net, info = load_exported(_first_format(tmp_path))  # files of the first format: weights and config only
    assert info.class_names is None and info.mean is None and not net.training
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 1, H, W\)"):
        info.preprocess(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def _first_format(tmp_path: Path) -> Path:
    import dataclasses

    model = SourceOnly(task=Classification(network=NET)).model
    path = tmp_path / "old.pt"
    torch.save({"state_dict": export_main_bn(model).state_dict(), "network": dataclasses.asdict(NET)}, path)
    return path


def test_segmentation_network_round_trip(tmp_path: Path) -> None:
    from syn2real.export import export_payload
    from syn2real.io import atomic_torch_save
    from syn2real.models.segmentation import SegNetworkConfig, build_segmenter

    cfg = SegNetworkConfig(backbone="resnet18", num_classes=3, head="fcn", fcn_channels=8)
    torch.manual_seed(0)
    original = build_segmenter(cfg).eval()
    atomic_torch_save(export_payload(original, cfg, ["road", "car", "sky"], [{"name": "Normalize"}], (3, 32, 32)),
                      tmp_path / "seg.pt")
    net, info = load_exported(tmp_path / "seg.pt")
    x = info.preprocess(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8))
    assert info.task == "segmentation" and info.mean == (0.485, 0.456, 0.406)  # albumentations' default Normalize
    with torch.no_grad():
        assert torch.equal(net(x), original(x))
