"""Every tiny timm variant passes the supernet conformance suite."""

import pytest
import timm
import torch

from hybridmoo.supernet import make_supernet
from hybridmoo.testing.spaces import SupernetConformance, randomize_

torch.set_num_threads(1)


def tiny(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_(timm.create_model(name, num_classes=10, **kwargs))


class TestTinyResNet(SupernetConformance):
    @pytest.fixture
    def supernet(self):
        return make_supernet(tiny("test_resnet"), image_size=32)


class TestTinyResNetDeeper(SupernetConformance):
    """Two blocks in stages 1 and 3 (test_resnet has one per stage): elastic depth."""

    @pytest.fixture
    def supernet(self):
        return make_supernet(tiny("test_resnet", layers=(2, 1, 2, 1)), image_size=32)


class TestTinyEfficientNet(SupernetConformance):
    """Two blocks per stage: MBConv / EdgeResidual skips and squeeze-excite channels."""

    @pytest.fixture
    def supernet(self):
        return make_supernet(tiny("test_efficientnet", depth_multiplier=2.0), image_size=32)


class TestTinyConvNeXt(SupernetConformance):
    @pytest.fixture
    def supernet(self):
        return make_supernet(tiny("test_convnext"), image_size=32)


class TestTinyViT(SupernetConformance):
    @pytest.fixture
    def supernet(self):
        return make_supernet(tiny("test_vit", img_size=32), image_size=32)
