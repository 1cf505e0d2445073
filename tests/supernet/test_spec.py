"""The bundled supernet specs load, serve distinct models, and bad specs are clear errors."""

import pytest

from hybridmoo.errors import ConfigError
from hybridmoo.supernet import SupernetSpec, bundled_specs, spec_for_model
from hybridmoo.supernet.spec import spec_files

REQUIRED = {"resnet": {"resnet18", "resnet50", "test_resnet"},
            "mobilenet_efficientnet": {"mobilenetv3_large_100", "efficientnet_b0",
                                       "test_efficientnet"},
            "convnext": {"convnext_atto", "test_convnext"},
            "vit": {"vit_tiny_patch16_224", "vit_small_patch16_224", "test_vit"}}


def test_every_family_of_the_issue_is_bundled():
    specs = bundled_specs()
    assert len(spec_files()) == len(specs)
    for family, models in REQUIRED.items():
        assert models <= set(specs[family].models)
        for model in models:
            assert spec_for_model(model).family == family


GOOD = {"family": "x", "models": ["m"], "stages": "layer\\d+"}


@pytest.mark.parametrize(("change", "message"), [
    ({"familly": "x"}, "did you mean 'family'"),
    ({"models": []}, "models must be"),
    ({"stages": "("}, "invalid regular expression"),
    ({"width": {"ratios": [0.5]}}, "include 1.0"),
    ({"width": {"ratios": [0.5, 1.0], "granularity": "layer"}}, "granularity"),
    ({"width": {"divisor": 2.5}}, "integer"),
    ({"width": {"colour": 1}}, "unknown key 'colour'"),
    ({"depth": {"min_keep": -1}}, "min_keep"),
    ({"heads": {"min_ratio": 0.5}}, "attention"),
    ({"quant": {"w_bits": [2, 32]}}, "w_bits"),
    ({"quant": {"a_bits": [8]}}, "a_bits"),
    ({"image_size_arg": "yes"}, "true or false"),
])
def test_bad_specs_are_clear_errors(change, message):
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if not (k == "family" and "familly" in change)}
    with pytest.raises(ConfigError, match=message):
        SupernetSpec.from_dict(data, source="test.yaml")


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'stages'"):
        SupernetSpec.from_dict({"family": "x", "models": ["m"]})


def test_a_good_spec_round_trips_its_values():
    spec = SupernetSpec.from_dict({**GOOD, "width": {"ratios": [1, 0.5]},
                                   "quant": {"w_bits": [32, 8], "a_bits": [32]}})
    assert spec.width.ratios == (0.5, 1.0) and all(isinstance(r, float) for r in spec.width.ratios)
    assert spec.quant.w_bits == (8, 32) and spec.depth is None
