"""Non-persistent buffers that transformers 5 leaves uninitialised in code written for transformers 4."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medmim_eval.adapters.hf.buffers import restore_buffers  # noqa: E402

pytestmark = pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5,
                                reason="transformers 4 computes these buffers itself")


class Rotary(torch.nn.Module):
    """The transformers-4-era pattern: caches computed in __init__ from arguments kept as attributes."""

    def __init__(self, dim: int, max_position_embeddings: int = 16, base: float = 10000.0, device: str | None = None,
                 scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.dim, self.max_position_embeddings, self.base, self.scaling_factor = dim, max_position_embeddings, base, \
            scaling_factor
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        t = torch.arange(max_position_embeddings, device=device).float() / scaling_factor
        emb = torch.cat([torch.outer(t, inv_freq)] * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos().to(torch.get_default_dtype()), persistent=False)


class Forgetful(torch.nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("table", torch.arange(size).float(), persistent=False)


class Block(torch.nn.Module):
    def __init__(self, rotary: torch.nn.Module) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.register_buffer("position_ids", torch.arange(4), persistent=False)  # a module with weights: left alone
        self.rotary = rotary


def test_garbage_buffers_are_rebuilt_in_the_loaded_dtype_and_kept_arguments() -> None:
    truth = Rotary(8, max_position_embeddings=12, base=500.0, scaling_factor=2.0)
    block = Block(Rotary(8, max_position_embeddings=12, base=500.0, scaling_factor=2.0))
    block.rotary.inv_freq = torch.full_like(block.rotary.inv_freq, float("nan"))  # what torch.empty_like may hold
    block.rotary.cos_cached = torch.full((12, 8), 7.0, dtype=torch.bfloat16)
    block.position_ids = torch.full_like(block.position_ids, -1)
    restored = restore_buffers(block, "test")
    assert sorted(restored) == ["rotary.cos_cached", "rotary.inv_freq"]
    assert torch.equal(block.rotary.inv_freq, truth.inv_freq)
    assert block.rotary.cos_cached.dtype == torch.bfloat16
    assert torch.equal(block.rotary.cos_cached, truth.cos_cached.to(torch.bfloat16))
    assert block.position_ids.tolist() == [-1] * 4


def test_a_module_that_cannot_be_rebuilt_keeps_its_buffers_and_is_named_in_one_warning(
        capsys: pytest.CaptureFixture[str]) -> None:
    block = Block(Forgetful(3))
    block.rotary.table = torch.full((3,), 5.0)
    assert restore_buffers(block, "hf-x /ckpt") == []
    assert block.rotary.table.tolist() == [5.0] * 3
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and err.startswith("hf-x /ckpt: warning:")
    assert "rotary (Forgetful): Forgetful(size=...) cannot be rebuilt" in err and "transformers < 5" in err
