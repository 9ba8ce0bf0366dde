import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from engines.meta import ModelMeta  # noqa: E402
from engines.model import create_model  # noqa: E402
from train.compare import arch_costs  # noqa: E402

pytestmark = pytest.mark.slow  # conversions and several networks: not in the quick run


@pytest.mark.parametrize("arch, size", [("mobilenetv3_small_050", 64), ("mobilenetv3_small_050", 96)])
def test_arch_costs_measure_the_real_network(arch, size):
    row = arch_costs(arch, size, batch=4, seconds=0.2)
    assert row["parameters"] == sum(p.numel() for p in create_model(meta=ModelMeta(arch=arch, input_size=size)).parameters())
    assert row["mflops"] > 1 and row["crops_per_s"] > 0 and row["input_size"] == size


def test_flops_grow_with_the_input_side():
    small, large = (arch_costs("mobilenetv3_small_050", s, batch=2, seconds=0.1)["mflops"] for s in (64, 128))
    assert 3.0 < large / small < 5.0  # convolutions scale with the pixel count (x4)
