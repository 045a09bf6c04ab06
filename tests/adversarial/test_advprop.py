"""AdvProp: dual BatchNorm conversion and routing, the auxiliary loss, export of the main path, the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from syn2real.adversarial import (
    AdvProp,
    DualBatchNorm,
    bn_route,
    convert_dual_bn,
    export_main_bn,
)
from syn2real.adversarial.advprop import expand_to_dual_bn
from syn2real.methods import SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig, build_classifier

NET = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)


def digits(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_conversion_wraps_every_batchnorm_and_keeps_the_function() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).eval()
    n_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())
    x, _ = digits()
    before = model(x)
    assert convert_dual_bn(model) == n_bn == 2  # the two conv blocks of digits_cnn
    assert convert_dual_bn(model) == 0  # idempotent
    assert sum(isinstance(m, DualBatchNorm) for m in model.modules()) == n_bn
    assert torch.allclose(model(x), before)
    with bn_route(model, "aux"):
        assert torch.allclose(model(x), before)  # the aux copy starts identical


def test_routing_selects_the_auxiliary_layers_and_is_restored() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).eval()
    convert_dual_bn(model)
    x, _ = digits()
    main_out = model(x)
    for m in model.modules():
        if isinstance(m, DualBatchNorm):
            nn.init.constant_(m.aux.weight, 3.0)
    assert torch.allclose(model(x), main_out)  # main path ignores the aux weights
    with bn_route(model, "aux"):
        assert not torch.allclose(model(x), main_out)
    assert all(m.route == "main" for m in model.modules() if isinstance(m, DualBatchNorm))
    assert torch.allclose(model(x), main_out)


def test_training_forward_on_aux_updates_only_aux_statistics() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).train()
    convert_dual_bn(model)
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    main_stats = [m.main.running_mean.clone() for m in duals]
    aux_stats = [m.aux.running_mean.clone() for m in duals]
    with bn_route(model, "aux"):
        model(digits()[0] + 3.0)
    assert all(torch.equal(m.main.running_mean, s) for m, s in zip(duals, main_stats))
    assert all(not torch.equal(m.aux.running_mean, s) for m, s in zip(duals, aux_stats))


def test_timm_batchnorm_act_layers_convert_with_their_activation() -> None:
    torch.manual_seed(0)
    net = NetworkConfig(backbone="tf_efficientnet_lite0", num_classes=10, in_chans=3)
    model = build_classifier(net).eval()
    n_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    assert convert_dual_bn(model) == n_bn > 40
    assert torch.allclose(model(x), before, atol=1e-6)


def test_export_equals_the_main_path_with_the_plain_key_names() -> None:
    torch.manual_seed(0)
    plain = build_classifier(NET)
    model = build_classifier(NET)
    model.load_state_dict(plain.state_dict())
    convert_dual_bn(model)
    model.train()
    with bn_route(model, "aux"):
        model(digits()[0] * 2)  # diverge the aux statistics
    model(digits()[0])
    model.eval()
    exported = export_main_bn(model).eval()
    assert not any(isinstance(m, DualBatchNorm) for m in exported.modules())
    assert any(isinstance(m, DualBatchNorm) for m in model.modules())  # the original is untouched
    assert set(exported.state_dict()) == set(plain.state_dict())
    x, _ = digits()
    assert torch.allclose(exported(x), model(x))
    plain.load_state_dict(exported.state_dict())  # deployable into the unconverted architecture
    assert torch.allclose(plain.eval()(x), model(x))


def test_plain_checkpoint_weights_expand_to_both_paths() -> None:
    torch.manual_seed(0)
    plain = build_classifier(NET)
    model = build_classifier(NET)
    convert_dual_bn(model)
    model.load_state_dict(expand_to_dual_bn(model, plain.state_dict()))
    for name, m in model.named_modules():
        if isinstance(m, DualBatchNorm):
            assert torch.equal(m.main.weight, plain.get_submodule(name).weight)
            assert torch.equal(m.aux.running_var, plain.get_submodule(name).running_var)


def test_auxiliary_loss_trains_aux_bn_and_shared_weights_but_not_main_bn() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).train()
    advprop = AdvProp(epsilon=4 / 255, step_size=1 / 255)
    assert advprop.attack.steps == 5  # the paper's rule: eps (in /255) + 1
    advprop.prepare(model)
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    main_stats = [m.main.running_mean.clone() for m in duals]
    x, y = digits()
    assert advprop(model, x, y)[0] is x  # the clean batch passes unchanged
    loss = advprop.auxiliary_losses(model, x, y)["advprop_ce"]
    loss.backward()
    assert all(m.main.weight.grad is None for m in duals)
    assert all(m.aux.weight.grad is not None and m.aux.weight.grad.abs().sum() > 0 for m in duals)
    assert model.head[1].weight.grad.abs().sum() > 0
    assert all(torch.equal(m.main.running_mean, s) for m, s in zip(duals, main_stats))
    assert all(m.route == "main" for m in duals) and model.training


def test_auxiliary_loss_is_ce_of_the_attack_on_the_aux_path() -> None:
    torch.manual_seed(0)
    model = build_classifier(NET).train()
    advprop = AdvProp(epsilon=0.1, step_size=0.05, steps=2, weight=0.5)
    advprop.prepare(model)
    twin = copy.deepcopy(model)  # the aux forward updates running statistics: compare against an untouched twin
    x, y = digits()
    torch.manual_seed(3)
    loss = advprop.auxiliary_losses(model, x, y)["advprop_ce"]
    torch.manual_seed(3)
    with bn_route(twin, "aux"):
        adv = advprop.attack.perturb(twin, x, y)
        expected = 0.5 * F.cross_entropy(twin(adv), y)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_method_with_advprop_adds_the_term_one_to_one() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Classification(network=NET), augment=AdvProp(epsilon=1 / 255))
    assert any(isinstance(m, DualBatchNorm) for m in method.model.modules())
    assert any(p is method.model.backbone.features[0][1].aux.weight for p in method.model.parameters())
    x, y = digits()
    logged = {}
    method.log = lambda *a, **k: None  # type: ignore[method-assign]
    method.log_dict = lambda d, **k: logged.update(d)  # type: ignore[method-assign]
    loss = method.training_step({"source": (x, y), "target": (x, y, torch.arange(8))}, 0)
    assert "train/advprop_ce" in logged
    assert torch.allclose(loss, logged["train/source_ce"] + logged["train/advprop_ce"], atol=1e-6)


def test_model_without_batchnorm_is_refused() -> None:
    net = NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1, backbone_kwargs={"batch_norm": False})
    with pytest.raises(ValueError, match="no BatchNorm"):
        SourceOnly(task=Classification(network=net), augment=AdvProp())


@pytest.mark.slow
def test_advprop_fit_export_and_robustness_through_the_cli(tmp_path) -> None:
    from conftest import REPO, config_args
    from test_cli import SMALL, run_cli

    from syn2real.models.checkpoint import load_model_weights

    config = config_args(REPO / "configs" / "digits" / "robust" / "advprop.yaml")
    run = tmp_path / "advprop"
    run_cli("fit", *config, *SMALL, "--trainer.default_root_dir", str(run), "--trainer.logger", "false",
            cwd=tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    run_cli("export", *config, "--ckpt", str(ckpt), "--output", str(tmp_path / "model.pt"), cwd=tmp_path)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    deployed = build_classifier(NetworkConfig(**payload["network"]))
    deployed.load_state_dict(payload["state_dict"])  # plain architecture, strict
    method = SourceOnly(task=Classification(network=NetworkConfig(**payload["network"])), augment=AdvProp())
    load_model_weights(method.model, str(ckpt))
    x, _ = digits()
    assert torch.allclose(deployed.eval()(x), method.model.eval()(x), atol=1e-6)

    proc = run_cli("robustness", *config, "--ckpt", str(ckpt), "--max_images", "48", "--eps", "0.3",
                   "--pgd_steps", "3", "--corruptions", "gaussian_noise", "fog", "--severities", "1", "5",
                   "--noise", "0.5", "--no_wandb", *SMALL[:4], cwd=tmp_path)
    report = json.loads((run / "robustness" / "robustness.json").read_text())
    assert report["n_images"] == 48 and 0 <= report["clean"]["acc"] <= 1
    assert set(report["pgd"]["acc"]) == {"0.3"} and report["pgd"]["steps"] == 3
    assert report["spatial"]["grid_size"] == 775
    assert set(report["corruptions"]["acc"]["gaussian_noise"]) == {"1", "5"}
    # fog (broken in imagecorruptions on numpy 2) now comes from syn2real.data.corruptions
    assert set(report["corruptions"]["acc"]["fog"]) == {"1", "5"} and not report["corruptions"]["unavailable"]
    assert (run / "robustness" / "reliability.png").stat().st_size > 0
    assert "PGD-3" in proc.stdout


def test_advprop_checkpoint_loads_into_a_plain_network_with_its_main_bns(tmp_path) -> None:
    from syn2real.models.checkpoint import load_model_weights

    torch.manual_seed(0)
    method = SourceOnly(task=Classification(network=NET), augment=AdvProp())
    for m in method.model.modules():
        if isinstance(m, DualBatchNorm):
            nn.init.constant_(m.aux.weight, 5.0)
    torch.save({"state_dict": method.state_dict()}, tmp_path / "advprop.ckpt")
    plain = build_classifier(NET)
    load_model_weights(plain, str(tmp_path / "advprop.ckpt"))
    x, _ = digits()
    assert torch.allclose(plain.eval()(x), method.model.eval()(x), atol=1e-6)
