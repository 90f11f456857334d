"""`torch.export` programs (the artifact's pt2 form) as runtime graphs: for users who deploy with torch.

Only `Runtime(dir, backend="pt2")` imports this module, and torch with it; the ONNX path never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from policies.errors import PolicyError


def pt2_graph(path: Path):
    """A `torch.export` program as a runtime graph (feeds by input name, outputs as NumPy)."""
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - torch raises several types for a bad file
        raise PolicyError(f"{path} is not a loadable torch.export program ({str(e).splitlines()[0][:200]})") from None
    module = program.module()
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ordered = [feeds[n] for n in _input_order(feeds, names)]
        with torch.no_grad():
            outs = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in ordered])
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return [o.numpy() for o in outs]

    return run


def _input_order(feeds: dict[str, np.ndarray], traced: list[str]) -> list[str]:
    """Feeds in the traced order: hist, lang, buffer, noise_0.. (the names a graph was exported with)."""
    order = [k for k in ("hist", "lang", "buffer", "features") if k in feeds]
    order += sorted((k for k in feeds if k.startswith("noise_")), key=lambda k: int(k.split("_")[1]))
    if len(order) != len(traced):
        raise PolicyError(f"the pt2 program takes {len(traced)} inputs, {len(order)} were given")
    return order
