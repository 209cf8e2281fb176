"""GMP-VIS network: backbone -> deformable encoder + temporal aggregation -> deformable
decoder -> class / box / mask / instance-embedding heads, DCN pixel decoder, and the
graph-matching association head. ``gmpvis.model.build_model(cfg)`` builds one from a config.

Clip mode (training): ``model(frames [B, T, 3, H, W], pad_mask [B, H, W])``.
Online mode (inference, constant memory): ``features, state = model.encode_frame(frame,
pad_mask, state)`` then ``model.decode_frame(features)``, or both at once with
``model.step(frame, pad_mask, state)``; ``model.associate(...)`` matches two sets of
proposals.
"""

from __future__ import annotations

import torch
from torch import nn

from gmpvis.association import GraphMatchingHead, ProposalNodes, TrackNodes
from gmpvis.model.decoder import DeformableDecoder
from gmpvis.model.encoder import DeformableEncoder, InputProjection, LevelBatch
from gmpvis.model.seg_head import PixelDecoder, masks_from_embeddings
from gmpvis.model.temporal import MemoryState, TemporalAggregator

# what every decoder layer outputs, per frame and query
OUTPUT_KEYS = ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds", "pred_queries")


class GMPVIS(nn.Module):
    """The network, wired from its parts (all keyword-only; hidden size ``D`` throughout).

    Args:
        backbone: ``[N, 3, H, W]`` -> ``{stride: [N, C_s, h, w]}`` with ``.channels``.
        input_proj: backbone maps -> :class:`LevelBatch` of ``L`` levels.
        encoder: per-frame deformable encoder, ``LevelBatch`` -> ``[N, S, D]``.
        temporal: memory-token aggregation across the frames of a clip / the rolling memory.
        class_head: ``[..., D]`` -> ``[..., C]`` logits.
        mask_head: ``[..., D]`` -> ``[..., mask_dim]`` mask embeddings.
        embed_head: ``[..., D]`` -> ``[..., E]`` instance embeddings.
        decoder: per-frame queries; owns the box head (``decoder.bbox_head``).
        pixel_decoder: encoder levels + backbone maps -> ``[N, mask_dim, H/s, W/s]``.
        gm_head: graph matching association head on ``E``-dim embeddings.
        aux_loss: also return the outputs of the earlier decoder layers.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        input_proj: InputProjection,
        encoder: DeformableEncoder,
        temporal: TemporalAggregator,
        class_head: nn.Module,
        mask_head: nn.Module,
        embed_head: nn.Module,
        decoder: DeformableDecoder,
        pixel_decoder: PixelDecoder,
        gm_head: GraphMatchingHead,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        self.aux_loss = aux_loss
        # registration order = state-dict and parameter order (optimizer state indexes it)
        self.backbone = backbone
        self.input_proj = input_proj
        self.encoder = encoder
        self.temporal = temporal
        self.class_head = class_head
        self.bbox_head = decoder.bbox_head
        self.mask_head = mask_head
        self.embed_head = embed_head
        self.decoder = decoder
        self.pixel_decoder = pixel_decoder
        self.gm_head = gm_head

    # ------------------------------------------------------------------ building blocks
    def _spatial(self, images: torch.Tensor, pad_mask: torch.Tensor):
        """images ``[N, 3, H, W]``, pad_mask ``[N, H, W]`` -> (levels, encoded src
        ``[N, S, D]``, backbone maps)."""
        feats = self.backbone(images)
        levels = self.input_proj(feats, pad_mask)
        return levels, self.encoder(levels), feats

    def _decode(
        self, src: torch.Tensor, levels: LevelBatch, feats: dict[int, torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """-> one dict per decoder layer with ``[N, Nq, ...]`` tensors."""
        hs, boxes = self.decoder(src, levels)
        pixel = self.pixel_decoder(levels.split_levels(src)[::-1], feats)
        return [
            {
                "pred_logits": self.class_head(h),
                "pred_boxes": box,
                "pred_masks": masks_from_embeddings(self.mask_head(h), pixel),
                "pred_embeds": self.embed_head(h),
                "pred_queries": h,
            }
            for h, box in zip(hs, boxes, strict=True)
        ]

    @staticmethod
    def _check_frames(frames: torch.Tensor, pad_mask: torch.Tensor | None, lead: int):
        """``frames [*lead, 3, H, W]`` (lead = 2 for clips, 1 for frames) -> pad mask."""
        shape = "[B, T, 3, H, W]" if lead == 2 else "[B, 3, H, W]"
        if frames.dim() != lead + 3 or frames.shape[lead] != 3:
            raise ValueError(f"frames must be {shape}, got {tuple(frames.shape)}")
        B, (H, W) = frames.shape[0], frames.shape[-2:]
        if pad_mask is None:
            return torch.zeros(B, H, W, dtype=torch.bool, device=frames.device)
        if pad_mask.shape != (B, H, W):
            raise ValueError(f"pad_mask must be [{B}, {H}, {W}], got {tuple(pad_mask.shape)}")
        return pad_mask.bool()

    # ------------------------------------------------------------------ clip mode
    def forward(self, frames: torch.Tensor, pad_mask: torch.Tensor | None = None) -> dict:
        """frames ``[B, T, 3, H, W]``, pad_mask ``[B, H, W]`` (True on padding) -> dict with
        ``pred_logits [B,T,Nq,C]``, ``pred_boxes [B,T,Nq,4]``, ``pred_masks
        [B,T,Nq,H/s,W/s]``, ``pred_embeds [B,T,Nq,E]``, ``pred_queries [B,T,Nq,D]``
        (decoder states) and, with ``aux_loss``, ``aux_outputs`` (the same keys for each
        earlier decoder layer)."""
        pad_mask = self._check_frames(frames, pad_mask, lead=2)
        B, T = frames.shape[:2]
        images = frames.flatten(0, 1)
        masks = pad_mask[:, None].expand(B, T, *pad_mask.shape[1:]).flatten(0, 1)
        levels, src, feats = self._spatial(images, masks)
        src = self.temporal.forward_clip(src, levels.pos, levels.mask, T)
        layers = [
            {k: v.unflatten(0, (B, T)) for k, v in layer.items()}
            for layer in self._decode(src, levels, feats)
        ]
        out: dict = dict(layers[-1])
        if self.aux_loss:
            out["aux_outputs"] = layers[:-1]
        return out

    # ------------------------------------------------------------------ online mode
    def encode_frame(
        self, frame: torch.Tensor, pad_mask: torch.Tensor | None, memory_state: MemoryState
    ) -> tuple[dict, MemoryState]:
        """One frame per video ``[B, 3, H, W]`` with the rolling memory of the previous
        ``K - 1`` frames (``None`` at the start) -> (features for :meth:`decode_frame`, new
        state). Memory use does not grow with the video length."""
        pad_mask = self._check_frames(frame, pad_mask, lead=1)
        levels, src, feats = self._spatial(frame, pad_mask)
        src, state = self.temporal.forward_frame(src, levels.pos, levels.mask, memory_state)
        return {"src": src, "levels": levels, "backbone": feats}, state

    def decode_frame(self, features: dict) -> dict[str, torch.Tensor]:
        """-> ``pred_logits [B,Nq,C]``, ``pred_boxes [B,Nq,4]``, ``pred_masks [B,Nq,h,w]``,
        ``pred_embeds [B,Nq,E]``, ``pred_queries [B,Nq,D]`` (last decoder layer)."""
        return self._decode(features["src"], features["levels"], features["backbone"])[-1]

    def step(
        self, frame: torch.Tensor, pad_mask: torch.Tensor | None, memory_state: MemoryState
    ) -> tuple[dict[str, torch.Tensor], MemoryState]:
        """:meth:`encode_frame` followed by :meth:`decode_frame`."""
        features, state = self.encode_frame(frame, pad_mask, memory_state)
        return self.decode_frame(features), state

    def associate(self, tracks: TrackNodes, proposals: ProposalNodes) -> torch.Tensor:
        """Graph matching of tracks and proposals -> soft assignment ``[B, n + 1, m + 1]``
        (last row / column: dustbin); see :class:`GraphMatchingHead`."""
        return self.gm_head(tracks, proposals)
