"""`renal-ldm inspect` (renal_ldm.models.inspect): what a checkpoint directory, an LDM .ckpt and a .safetensors file
hold, without building a model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from renal_ldm.cli import main
from renal_ldm.models.build import count_parameters
from renal_ldm.models.checkpoint import load_model
from renal_ldm.models.inspect import format_summary, inspect_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_checkpoint_directory_is_described_from_its_manifest_and_headers(tiny_model_dir):
    summary = inspect_checkpoint(tiny_model_dir)
    model = load_model(tiny_model_dir)
    assert summary.format == "renal-ldm checkpoint directory" and summary.kind == "ldm"
    modules = {m.name: m for m in summary.modules}
    assert modules["unet"].parameters == count_parameters(model.unet)
    assert modules["vae"].parameters == count_parameters(model.vae)
    assert sum(modules["unet"].children.values()) == modules["unet"].parameters
    assert set(modules["unet"].children) >= {"down_blocks", "mid_block", "up_blocks", "time_embedding"}
    assert summary.facts["text encoder"] == "minilm" and summary.facts["context dim"] == 384
    assert summary.config["name"] == "tiny"
    text = format_summary(summary)
    assert f"fingerprint: {model.fingerprint} (matches the weights)" in text
    assert "latent: 8 x 8 x 3 (factor 4)" in text and "parameters by module:" in text
    assert f"total: {count_parameters(model.unet) + count_parameters(model.vae):,}" in text


def test_weights_that_changed_after_saving_show_in_the_fingerprint(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "weights hash to" in inspect_checkpoint(copy).fingerprints["fingerprint"]


def test_a_latent_diffusion_ckpt_is_grouped_by_its_prefixes(tmp_path):
    z = torch.zeros
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": z(32, 3, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": z(64, 48),
        "model.diffusion_model.out.2.bias": z(3),
        "model_ema.diffusion_modelinput_blocks000weight": z(32, 3, 3, 3),
        "model_ema.decay": torch.tensor(0.9999),
        "first_stage_model.encoder.conv_in.weight": z(32, 3, 3, 3),
        "first_stage_model.encoder.down.0.block.0.conv1.weight": z(32, 32, 3, 3),
        "first_stage_model.encoder.down.1.block.0.conv1.weight": z(64, 32, 3, 3),
        "first_stage_model.quantize.embedding.weight": z(64, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": z(100, 48),
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight": z(96, 48),
        "betas": z(1000, dtype=torch.float64),
    }
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 1234, "pytorch-lightning_version": "1.4.2"}, path)
    summary = inspect_checkpoint(path)
    assert summary.kind == "latent diffusion model (LDM layout)"
    facts = summary.facts
    assert facts["global_step"] == 1234 and facts["pytorch-lightning_version"] == "1.4.2"
    assert facts["unet base channels"] == 32 and facts["context dim"] == 48
    assert facts["VQ codebook"] == "64 x 3" and facts["first stage"] == "ch 32, 2 levels (factor 2)"
    assert facts["text encoder"] == "CLIP text model: 48 wide, 1 layer, vocabulary 100"
    assert facts["EMA copy"] == "1 tensor (model_ema.*)"
    modules = {m.name: m for m in summary.modules}
    assert modules["model.diffusion_model"].parameters == 32 * 27 + 64 * 48 + 3
    assert modules["model.diffusion_model"].children == {"input_blocks": 32 * 27 + 64 * 48, "out": 3}
    assert modules["(buffers)"].bytes == 8000 and modules["(buffers)"].dtypes == {"float64"}
    assert modules["cond_stage_model"].children == {"transformer.text_model": 100 * 48 + 96 * 48}
    assert len(summary.fingerprints["sha256"]) == 16
    assert "kind: latent diffusion model (LDM layout)" in format_summary(summary)


def test_a_safetensors_file_is_read_from_its_header(tiny_model_dir):
    path = tiny_model_dir / "vae" / "diffusion_pytorch_model.safetensors"
    summary = inspect_checkpoint(path)
    assert summary.format == "safetensors file" and summary.kind == "tensors"
    modules = {m.name: m for m in summary.modules}
    assert sum(m.parameters for m in summary.modules) == count_parameters(load_model(tiny_model_dir).vae)
    assert {"encoder", "decoder", "quantize"} <= set(modules)


def test_inspect_on_the_command_line(tiny_model_dir, tmp_path, capsys):
    assert main(["inspect", str(tiny_model_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "ldm" and data["parameters"] == sum(m["parameters"] for m in data["modules"])
    (tmp_path / "plain").mkdir()
    assert main(["inspect", str(tmp_path / "plain")]) == 2
    assert "not a renal-ldm checkpoint" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "absent")]) == 2
    assert "not found" in capsys.readouterr().err
