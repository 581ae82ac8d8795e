"""The job spec contract: defaults, bounds and rejection of unknown fields."""

import pytest
from pydantic import ValidationError

from contract.spec import EditJobSpec

BASE = {"model": {"path": "m"}, "calibration": {"texts": ["hello world"]}}


def test_defaults_and_sweep():
    spec = EditJobSpec.model_validate({**BASE, "edit": {"keep_mass": [0.9, 0.5]}})
    assert spec.edit.sweep == [0.9, 0.5]
    assert spec.edit.projections == ["gate", "up"]
    assert spec.curvature.fisher == "sampled"
    assert EditJobSpec.model_validate(BASE).edit.sweep == [0.6]


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"edit": {"keep_mass": 0}}, "keep_mass"),
        ({"edit": {"keep_mass": 1.01}}, "keep_mass"),
        ({"edit": {"projections": ["gate", "proj"]}}, "projections"),
        ({"bogus": 1}, "bogus"),
        ({"model": {"path": "m", "hub_id": "x/y"}}, "model"),
        ({"calibration": {"texts": ["a"], "path": "c.txt"}}, "calibration"),
        ({"calibration": {"dataset_id": "../../etc"}}, "dataset_id"),
    ],
)
def test_rejections_name_the_field(patch, field):
    with pytest.raises(ValidationError) as err:
        EditJobSpec.model_validate({**BASE, **patch})
    assert field in str(err.value)
