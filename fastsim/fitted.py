"""The base of every fitted torch module: preprocessing transforms (:mod:`fastsim.data.transforms`)
and the models' feature standardisations (:mod:`fastsim.models.components.features`) alike.

A fitted module keeps what it learned from the training data in registered buffers, so it
travels in a checkpoint's ``state_dict`` and is traced into ONNX; :class:`FittedModule` adds the
"fitted" flag restored when a state_dict is loaded. It lives here, below both ``fastsim.data``
and ``fastsim.models``, so neither imports the other's private names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastsim.errors import FastsimError

__all__ = ["FittedModule"]


class FittedModule(nn.Module):
    """Common machinery: a Python-side "fitted" flag restored when a state_dict is loaded.

    The flag is a plain attribute (not a buffer) so checking it in ``forward`` costs no device
    synchronisation and does not enter a traced graph.
    """

    needs_fit: bool = True
    #: buffers whose length depends on the data (e.g. per-voxel statistics)
    _data_shaped_buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        # read from the class: Chain's needs_fit is a property of stages that do not exist yet
        self._fitted = getattr(type(self), "needs_fit", True) is False

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise FastsimError(f"{type(self).__name__} is used before fit() or load_state_dict()")

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # Buffers whose shape depends on the data (per-voxel statistics) take the loaded shape,
        # so an unfitted module built without knowing V can load a checkpoint; any other shape
        # mismatch is left to torch to report.
        for name in self._data_shaped_buffers:
            buf, key = self._buffers.get(name), prefix + name
            if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if all(prefix + name in state_dict for name in self._buffers):
            self._fitted = True
            self._after_load()

    def _after_load(self) -> None:
        """Hook run after a state_dict load: subclasses reset ``_fitted`` if the values are unfitted."""

    def config(self) -> dict[str, Any]:
        raise NotImplementedError
