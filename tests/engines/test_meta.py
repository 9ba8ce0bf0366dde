"""ModelMeta: the metadata that travels with the weights, and its checks on reading."""

from __future__ import annotations

import json

import pytest

from engines.errors import RealtimeError
from engines.meta import AGE_LABELS, FORMAT_VERSION, ModelMeta


def test_json_round_trip_keeps_every_field():
    meta = ModelMeta(arch="resnet18", input_size=128, crop_scale=1.4, years_bins=101, trained=True, trained_on="UTKFace",
                     members=({"arch": "a"}, {"arch": "b", "years_bins": 101}), extra={"note": 1})
    back = ModelMeta.from_json(meta.to_json())
    assert back == meta and back.extra == {"note": 1}
    assert isinstance(back.mean, tuple) and isinstance(back.members, tuple) and back.age_labels == AGE_LABELS


@pytest.mark.parametrize("field, value, says", [
    ("input_size", 8, "input_size = 8 (expected [16, 1024])"),
    ("input_size", 112.0, "expected an integer"),
    ("crop_scale", float("nan"), "crop_scale = nan"),
    ("std", [0.2, 0.2], "expected 3 numbers"),
    ("std", [0.2, 0.0, 0.2], "expected [0.001, 10]"),
    ("age_labels", ["a", "a"], "expected distinct non-empty names"),
    ("years_bins", 1, "expected [2, 1000]"),
    ("years_bins", True, "expected an integer"),
    ("members", [{"arch": "a"}], "2 or more member objects"),
    ("trained", "yes", "expected true or false"),
])  # fmt: skip
def test_a_bad_field_is_one_line_naming_it(field, value, says):
    data = json.loads(ModelMeta().to_json())
    data[field] = value
    with pytest.raises(RealtimeError) as e:
        ModelMeta.from_json(json.dumps(data), "m.onnx")
    assert str(e.value).startswith(f"m.onnx: bad model metadata: {field}") and says in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_fields_bad_json_and_newer_versions_are_refused():
    with pytest.raises(RealtimeError, match=r"unknown model metadata fields \['colour'\]"):
        ModelMeta.from_dict({"colour": 1}, "m")
    with pytest.raises(RealtimeError, match="not valid JSON"):
        ModelMeta.from_json("{", "m")
    with pytest.raises(RealtimeError, match="not a JSON object"):
        ModelMeta.from_json("[1, 2]", "m")
    with pytest.raises(RealtimeError, match="newer than this realtime understands"):
        ModelMeta.from_dict({"format_version": FORMAT_VERSION + 1}, "m")


def test_defaults_are_the_default_model_framing():
    meta = ModelMeta()
    assert (meta.input_size, meta.crop_scale, meta.trained, len(meta.age_labels), meta.gender_labels) == (
        112, 1.15, False, 8, ("female", "male"))
