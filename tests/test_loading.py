"""The inference load plan (models/loading.py): the decisions the GPU path makes, tested as a
pure function for both devices, so "no GPU here" never means "untested" (fast tier)."""

from __future__ import annotations

import pytest

from mixtral_ft.errors import UsageError
from mixtral_ft.models.loading import plan_load
from mixtral_ft.models.quant import FourBitSpec


def test_cuda_4bit_plan_puts_everything_on_gpu0_in_bf16():
    plan = plan_load("cuda", load_in_4bit=True)
    assert plan.device_map == {"": 0}
    assert plan.dtype == "bfloat16"
    assert plan.four_bit == FourBitSpec(quant_type="nf4", double_quant=True, compute_dtype="bfloat16")
    assert plan.to_dict()["load_in_4bit"] is True


def test_cpu_4bit_plan_uses_float32_compute():
    plan = plan_load("cpu", load_in_4bit=True)
    assert plan.device_map == {"": "cpu"}
    assert plan.dtype == "float32" and plan.four_bit.compute_dtype == "float32"
    assert plan.four_bit.quant_type == "nf4" and plan.four_bit.double_quant


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_unquantized_plan_has_no_4bit(device):
    plan = plan_load(device, load_in_4bit=False)
    assert plan.four_bit is None and not plan.load_in_4bit
    assert plan.device_map == ({"": 0} if device == "cuda" else {"": "cpu"})


def test_unknown_device_is_a_usage_error():
    with pytest.raises(UsageError, match="Unknown device 'mps'"):
        plan_load("mps", load_in_4bit=True)


def test_the_4bit_config_matches_the_plan():
    """What transformers is handed for the linears (needs transformers, not a GPU)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    bnb = plan_load("cuda", load_in_4bit=True).four_bit.bnb_config()
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert plan_load("cpu", load_in_4bit=True).four_bit.bnb_config().bnb_4bit_compute_dtype == torch.float32


def test_an_endpoint_run_records_no_quantization(tmp_path, capsys):
    """The openai backend loads nothing in this process: the manifest's `quantization` is null."""
    import json

    from mixtral_ft.cli.main import main
    from support.fixtures_serve import free_port

    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"id": "q0", "context": "c", "question": "q"}) + "\n")
    out = tmp_path / "gen.jsonl"
    assert (
        main(
            [
                "generate",
                "--data",
                str(data),
                "--out",
                str(out),
                "-m",
                "m",
                "--backend",
                "openai",
                "--base-url",
                f"http://127.0.0.1:{free_port()}/v1",
                "--max-retries",
                "0",
                "--timeout",
                "2",
            ]
        )
        == 1
    )
    manifest = json.loads((tmp_path / "gen.jsonl.manifest.json").read_text())
    assert "quantization" in manifest and manifest["quantization"] is None
