"""What the two backends of exported graphs (onnxruntime, TensorRT) share: reading and checking the
graphs' metadata, the model description it gives, encoding in chunks of the encoder graph's N frames and
running the head graph clip by clip. A subclass opens its sessions or engines and says how to run one
(:meth:`GraphBackend._run`)."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from endo_depth_model.models import FrameFeatures, VDAConfig

from .base import Backend, BackendError, chunked, finish_output
from .graphs import ExportError, check_pair, read_metadata

__all__ = ["GraphBackend"]


class GraphBackend(Backend):
    """A backend that runs the encoder and head graphs of :func:`endo_depth_model.export.export_model`.

    Subclasses call :meth:`_read_graphs` first in ``__init__``, set ``self.encoder`` and ``self.head`` and
    implement :meth:`_run`. Inputs may be on any device; outputs are CPU float32 tensors.
    """

    #: the error a bad pair of graphs raises
    graph_error: type[BackendError] = BackendError
    encoder: Any
    head: Any

    def _read_graphs(self, encoder_path: str | Path, head_path: str | Path, device: str) -> None:
        """Read and check the two graphs' metadata; initialise the backend with the model they hold."""
        try:
            enc_meta, head_meta = read_metadata(encoder_path), read_metadata(head_path)
            check_pair(enc_meta, head_meta)
        except ExportError as exc:
            raise self.graph_error(str(exc)) from exc
        config = VDAConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in enc_meta.model_config.items()}
        )
        Backend.__init__(self, config, device, input_hw=enc_meta.input_hw, window=head_meta.frames)
        self.encoder_meta, self.head_meta = enc_meta, head_meta

    @abstractmethod
    def _run(self, graph, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """Run one graph (``self.encoder`` or ``self.head``) on ``feeds``; the outputs ``names``, in order."""

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> FrameFeatures:
        frames = self._check_frames(frames)
        b, t = frames.shape[:2]
        flat = frames.detach().to("cpu", torch.float32).flatten(0, 1)
        names = list(self.encoder_meta.outputs)
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for chunk, valid in chunked(flat, self.encoder_meta.frames):
            outs = self._run(self.encoder, {self.encoder_meta.inputs[0]: chunk.contiguous().numpy()}, names)
            for i, out in enumerate(outs):
                parts[i].append(out[:valid].astype(np.float32, copy=False))
        layers = tuple(torch.from_numpy(np.concatenate(p, axis=0)).unflatten(0, (b, t)) for p in parts)
        return FrameFeatures(layers, self.encoder_meta.patch_hw)  # type: ignore[arg-type]

    @torch.inference_mode()
    def decode(
        self,
        features: FrameFeatures,
        image_hw: tuple[int, int] | None = None,
        output_frames: slice | None = None,
    ) -> torch.Tensor:
        self._check_window(features)
        outs = []
        for i in range(features.layers[0].shape[0]):
            feeds = {
                name: x[i].detach().to("cpu", torch.float32).contiguous().numpy()
                for name, x in zip(self.head_meta.inputs, features.layers, strict=True)
            }
            (raw,) = self._run(self.head, feeds, [self.head_meta.outputs[0]])
            outs.append(torch.from_numpy(raw.astype(np.float32, copy=False)))
        hw = image_hw if image_hw is not None else features.image_hw
        return finish_output(torch.stack(outs), hw, output_frames)
