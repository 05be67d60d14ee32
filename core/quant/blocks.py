"""Finding the reconstruction blocks of a model and the order in which its modules run."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["find_blocks", "execution_order", "MAX_LAYERS_PER_BLOCK"]

# BRECQ's blocks are residual blocks of 2-3 convolutions; a sub-module with more quantizable
# layers than this is treated as a container and searched for smaller blocks.
MAX_LAYERS_PER_BLOCK = 8


def _is_leaf_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and all(
        not list(child.children()) for child in module.children()
    )


def _is_block_like(module: nn.Module) -> bool:
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        return False
    if isinstance(module, nn.Sequential):
        return _is_leaf_sequential(module)
    # A module with its own forward (a residual block, a double conv) is one unit of the model.
    return True


def find_blocks(model: nn.Module, layer_names: Iterable[str]) -> list[str]:
    """Module names of the blocks that together contain every layer in ``layer_names``.

    A block is a sub-module with its own ``forward`` (a residual block, a U-Net double conv) or an
    ``nn.Sequential`` of plain layers, holding at most :data:`MAX_LAYERS_PER_BLOCK` of the
    layers; larger containers are searched recursively, and a layer outside any such sub-module
    is its own block. Order: registration order (sort with :func:`execution_order`).
    """
    names = set(layer_names)
    if "" in names:
        return [""]
    blocks: list[str] = []

    def count(prefix: str) -> int:
        return sum(1 for n in names if n == prefix or n.startswith(prefix + "."))

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            full = f"{prefix}{child_name}"
            inside = count(full)
            if inside == 0:
                continue
            if full in names or (inside <= MAX_LAYERS_PER_BLOCK and _is_block_like(child)):
                blocks.append(full)
            else:
                visit(child, full + ".")

    visit(model, "")
    return blocks


class _StopForward(Exception):
    pass


@torch.no_grad()
def execution_order(
    model: nn.Module, names: Iterable[str], run: Callable[[], object]
) -> tuple[list[str], dict[str, int]]:
    """Order of the first call of each named module during ``run()``, and call counts.

    Names never called come last, in the given order, with a count of 0.
    """
    names = list(names)
    order: list[str] = []
    counts = dict.fromkeys(names, 0)
    handles = []
    for name in names:
        module = model.get_submodule(name) if name else model

        def hook(_module, _args, name=name):
            if counts[name] == 0:
                order.append(name)
            counts[name] += 1

        handles.append(module.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    order.extend(n for n in names if counts[n] == 0)
    return order, counts
