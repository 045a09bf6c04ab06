"""The injected tasks: supervised losses and masked (pseudo-label) losses by hand, accuracy, evaluation steps, the
config round trip a checkpoint relies on, and clear errors."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from syn2real.callbacks.pseudo_labels import RoundConfig
from syn2real.methods import SourceOnly
from syn2real.models.heads import NetworkConfig
from syn2real.models.segmentation import SegNetworkConfig
from syn2real.tasks import Classification, Segmentation

NET = NetworkConfig(backbone="digits_cnn", num_classes=3, in_chans=1)
SEG = SegNetworkConfig(backbone="resnet18", num_classes=3, aspp_rates=[1, 2])


class _Module:
    _trainer = None


def test_classification_losses_by_hand() -> None:
    task = Classification(NET)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    ce = [-math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(1 / (math.e + 2))]
    assert task.loss(_Module(), [logits], labels).item() == pytest.approx(sum(ce) / 2, rel=1e-6)
    # pseudo-labels: -1 = none; the mean over labelled samples only, weight 1 in one process
    loss, weight = task.masked_loss(_Module(), [logits], torch.tensor([-1, 2]))
    assert loss.item() == pytest.approx(ce[1], rel=1e-6) and weight.item() == 1.0
    loss, weight = task.masked_loss(_Module(), [logits], torch.tensor([-1, -1]))
    assert loss.item() == 0.0 and weight.item() == 0.0
    assert task.accuracy(logits, torch.tensor([0, 0])).item() == 0.5


def test_segmentation_losses_by_hand_ignore_255_and_the_auxiliary_level() -> None:
    task = Segmentation(SEG, aux_weight=0.5)
    main = torch.zeros(1, 3, 1, 2)
    main[0, 0, 0, 0] = 2.0  # pixel 0 predicts class 0; pixel 1 is uniform
    aux = torch.zeros(1, 3, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    ce_main = -math.log(math.exp(2) / (math.exp(2) + 2))
    expected = ce_main + 0.5 * math.log(3)
    assert task.loss(_Module(), [main, aux], labels).item() == pytest.approx(expected, rel=1e-6)
    loss, weight = task.masked_loss(_Module(), [main, aux], labels)
    assert loss.item() == pytest.approx(expected, rel=1e-6) and weight.item() == 1.0
    assert task.accuracy(main, torch.tensor([[[0, 1]]])).item() == 0.5  # pixel 1 argmax 0 != 1
    assert task.accuracy(main, labels).item() == 1.0  # only the labelled pixel counts
    assert task.unlabelled == 255 and Classification.unlabelled == -1


def test_task_config_round_trip_rebuilds_the_same_task() -> None:
    for task in (Classification(NET), Segmentation(SEG, aux_weight=0.2)):
        config = task.class_path_config()
        module, name = config["class_path"].rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        args = dict(config["init_args"])
        args["network"] = type(task.network)(**args["network"])
        if "inference" in args:
            args["inference"] = type(task.inference)(**args["inference"])
        rebuilt = cls(**args)
        assert rebuilt.init_args() == task.init_args() and repr(rebuilt) == repr(task)


def test_a_method_fills_in_its_default_network_and_stores_the_task_as_class_path() -> None:
    method = SourceOnly(task=Segmentation(aux_weight=0.3))
    assert method.network_cfg == SegNetworkConfig() and method.task.kind == "segmentation"
    hp = method.hparams["task"]
    assert hp["class_path"] == "syn2real.tasks.Segmentation" and hp["init_args"]["aux_weight"] == 0.3


def test_wrong_network_types_and_tasks_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="Classification needs task.init_args.network to be a classifier"):
        Classification(SEG)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Segmentation needs task.init_args.network to be a segmentation network"):
        Segmentation(NET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aux_weight must be >= 0"):
        Segmentation(SEG, aux_weight=-1)
    from syn2real.methods import DANN, OutputSpaceAdaptation

    with pytest.raises(ValueError, match="DANN supports the task Classification, got Segmentation"):
        DANN(task=Segmentation(SEG))
    with pytest.raises(ValueError, match="OutputSpaceAdaptation supports the task Segmentation, got Classification"):
        OutputSpaceAdaptation(task=Classification(NET))


def test_classification_evaluation_updates_metrics_and_validators() -> None:
    torch.manual_seed(0)
    method = SourceOnly(task=Classification(NET)).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    method.task.eval_step(method, x, y, "target")
    values = method.eval_metrics["target"].compute()
    expected = (method.model(x).argmax(1) == y).float().mean()
    assert values["target/acc"].item() == pytest.approx(expected.item())
    assert method.validators["entropy"].update_count == 1
    pred = method.task.predict(method, x)
    probs = F.softmax(method.model(x), dim=1)
    assert torch.equal(pred["pred"], probs.argmax(1)) and torch.allclose(pred["confidence"], probs.max(1).values)


def test_segmentation_rounds_follow_the_task() -> None:
    rounds = Segmentation(SEG).pseudo_label_rounds(RoundConfig(epochs_per_round=4, portion_start=0.3, bins=100),
                                                   soft=False, lrent_alpha=0.25)
    assert (rounds.cfg.epochs_per_round, rounds.cfg.portion_start, rounds.cfg.bins) == (4, 0.3, 100)
    batch = {"target": (torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 255), torch.tensor([0]))}
    x_t, labels, soft = Segmentation(SEG).pseudo_labelled_target(batch, rounds)
    assert x_t is batch["target"][0] and labels is batch["target"][1] and soft is None
