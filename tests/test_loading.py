"""The inference load layout (models/loading.py): the decisions the GPU path makes, tested as a
pure function for both devices, so "no GPU here" never means "untested" (fast tier)."""

from __future__ import annotations

import pytest

from mixtral_ft.errors import UsageError
from mixtral_ft.models.loading import load_layout
from mixtral_ft.models.quant import FourBitSpec


def test_cuda_4bit_layout_puts_everything_on_gpu0_in_bf16():
    layout = load_layout("cuda", load_in_4bit=True)
    assert layout.device_map == {"": 0}
    assert layout.dtype == "bfloat16"
    assert layout.four_bit == FourBitSpec(quant_type="nf4", double_quant=True, compute_dtype="bfloat16")
    assert layout.to_dict()["load_in_4bit"] is True


def test_cpu_4bit_layout_uses_float32_compute():
    layout = load_layout("cpu", load_in_4bit=True)
    assert layout.device_map == {"": "cpu"}
    assert layout.dtype == "float32" and layout.four_bit.compute_dtype == "float32"
    assert layout.four_bit.quant_type == "nf4" and layout.four_bit.double_quant


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_unquantized_layout_has_no_4bit(device):
    layout = load_layout(device, load_in_4bit=False)
    assert layout.four_bit is None and not layout.load_in_4bit
    assert layout.device_map == ({"": 0} if device == "cuda" else {"": "cpu"})


def test_unknown_device_is_a_usage_error():
    with pytest.raises(UsageError, match="Unknown device 'mps'"):
        load_layout("mps", load_in_4bit=True)


def test_the_4bit_config_matches_the_layout():
    """What transformers is handed for the linears (needs transformers, not a GPU)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    bnb = load_layout("cuda", load_in_4bit=True).four_bit.bnb_config()
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert load_layout("cpu", load_in_4bit=True).four_bit.bnb_config().bnb_4bit_compute_dtype == torch.float32


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
