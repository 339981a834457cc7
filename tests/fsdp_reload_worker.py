"""One process of the FSDP best-model reload test (tests/test_distributed.py), started twice by torchrun on CPU.

A tiny ViT (saved under its legacy parameter names) is the "best checkpoint"; every process builds the same ViT
with other weights, shards it with FSDP2 over gloo, and reloads the checkpoint with
:func:`recipes.model.trainer.load_into_sharded_model`. Prints ``RELOADED <rank> <max abs difference>`` and, for a
checkpoint of another label set, ``REFUSED <rank> <message>``; for a folder without model.safetensors (a
SHARDED_STATE_DICT checkpoint), ``MISSING <rank> <returned value>``.
"""

from __future__ import annotations

import gc
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import ViTConfig, ViTForImageClassification

from recipes.config import RecipeError
from recipes.model.trainer import load_into_sharded_model


def tiny_vit(seed: int, num_labels: int = 4) -> ViTForImageClassification:
    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=num_labels))


def sharded_vit(seed: int) -> ViTForImageClassification:
    model = tiny_vit(seed)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.vit.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def report(line: str) -> None:
    """Write one result line with a single system call, so the two ranks' lines never interleave (``print`` writes
    the text and the newline separately when Python runs unbuffered)."""
    os.write(sys.stdout.fileno(), (" ".join(line.split()) + "\n").encode())


def main(best: str, other_labels: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == 0:
        tiny_vit(seed=0).save_pretrained(best)
        tiny_vit(seed=0, num_labels=3).save_pretrained(other_labels)
    dist.barrier()

    model = sharded_vit(seed=1)
    assert load_into_sharded_model(model, model, best, main_process=rank == 0)
    loaded = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        expected = tiny_vit(seed=0).state_dict()
        assert set(loaded) == set(expected), sorted(set(loaded) ^ set(expected))[:4]
        difference = max((loaded[name] - value).abs().max().item() for name, value in expected.items())
        report(f"RELOADED {rank} {difference}")
    else:
        report(f"RELOADED {rank} -")

    try:
        load_into_sharded_model(model, model, other_labels, main_process=rank == 0)
        report(f"LOADED-WRONG {rank}")
    except RecipeError as err:
        report(f"REFUSED {rank} {err}")
    report(f"MISSING {rank} {load_into_sharded_model(model, model, best + '-missing', main_process=rank == 0)}")
    del model, loaded  # release the sharded parameters (and gloo's work on them) while the group is alive
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # Skip the interpreter's finalisation: gloo's worker threads can still hold tensors there and abort the
    # process ("terminate called without an active exception", SIGABRT) after every check has passed
    # (pytorch/pytorch#179291 describes the race). Everything the test reads was written with os.write.
    os._exit(0)
