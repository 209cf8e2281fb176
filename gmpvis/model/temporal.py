"""Temporal feature aggregation through per-frame memory tokens.

Each frame reads ``M`` memory tokens from its encoded features (cross-attention of learned
token queries to the frame's tokens). A temporal transformer mixes the tokens of the last
``K`` frames *causally*: a token of frame ``t`` attends to the tokens of frames
``t - K < t' <= t`` with a learned per-head bias for the age ``t - t'``. Each frame's feature
tokens then read the mixed tokens back (cross-attention + FFN).

Because mixing is causal and windowed, running a clip at once (training) and running frame
by frame with a rolling state of the last ``K - 1`` frames (online inference, constant
memory) give the same result. The state is a list with, per temporal layer, the layer
inputs of the previous frames ``[B, k, M, D]`` (``k <= K - 1``).
"""

from __future__ import annotations

import torch
from torch import nn

from gmpvis.model.encoder import ffn

MemoryState = list[torch.Tensor] | None


class TemporalMixLayer(nn.Module):
    """Causal windowed self-attention over memory tokens of several frames + FFN."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, window: int) -> None:
        super().__init__()
        self.n_heads, self.window = n_heads, window
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.age_bias = nn.Parameter(torch.zeros(n_heads, window))
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = ffn(d_model, d_ff, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, q_time: torch.Tensor, k_time: torch.Tensor
    ) -> torch.Tensor:
        """query ``[B, Tq, M, D]``, keys ``[B, Tk, M, D]``, times ``[Tq]`` / ``[Tk]`` (frame
        indices) -> ``[B, Tq, M, D]``. Key frame t' is visible to query frame t iff
        ``0 <= t - t' < K``."""
        B, Tq, M, D = query.shape
        Tk = keys.shape[1]
        age = q_time[:, None] - k_time[None, :]  # [Tq, Tk]
        visible = (age >= 0) & (age < self.window)
        bias = self.age_bias[:, age.clamp(0, self.window - 1)]  # [H, Tq, Tk]
        bias = bias.masked_fill(~visible, float("-inf"))
        bias = bias.repeat_interleave(M, 1).repeat_interleave(M, 2)  # [H, Tq*M, Tk*M]
        bias = bias[None].expand(B, -1, -1, -1).reshape(B * self.n_heads, Tq * M, Tk * M)
        q = query.reshape(B, Tq * M, D)
        k = keys.reshape(B, Tk * M, D)
        out, _ = self.attn(q, k, k, attn_mask=bias.to(q.dtype), need_weights=False)
        x = self.norm1(q + self.dropout(out))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return x.view(B, Tq, M, D)


class TemporalAggregator(nn.Module):
    """Read-in -> causal temporal mixing -> read-back (see module docstring).

    ``num_tokens`` memory tokens ``M`` per frame (0 disables the aggregation: identity),
    ``num_layers`` mixing layers over a window of ``window`` frames ``K``.
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        num_tokens: int,
        num_layers: int,
        window: int,
    ) -> None:
        super().__init__()
        D = d_model
        self.num_tokens, self.window = num_tokens, window
        self.enabled = num_tokens > 0
        if not self.enabled:
            return
        self.tokens = nn.Embedding(num_tokens, D)
        self.read_in = nn.MultiheadAttention(D, n_heads, dropout=dropout, batch_first=True)
        self.norm_in = nn.LayerNorm(D)
        self.mix = nn.ModuleList(
            TemporalMixLayer(D, n_heads, d_ff, dropout, window) for _ in range(num_layers)
        )
        self.read_back = nn.MultiheadAttention(D, n_heads, dropout=dropout, batch_first=True)
        self.norm_back = nn.LayerNorm(D)
        self.ffn = ffn(D, d_ff, dropout)
        self.norm_ffn = nn.LayerNorm(D)
        self.dropout = nn.Dropout(dropout)

    def _read(self, src: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """src/pos ``[N, S, D]``, mask ``[N, S]`` -> frame tokens ``[N, M, D]``."""
        q = self.tokens.weight[None].expand(src.shape[0], -1, -1).to(src.dtype)
        out, _ = self.read_in(q, src + pos, src, key_padding_mask=mask, need_weights=False)
        return self.norm_in(q + out)

    def _write_back(self, src: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor):
        """src ``[N, S, D]`` attends to its frame's mixed tokens ``[N, M, D]``."""
        out, _ = self.read_back(src + pos, tokens, tokens, need_weights=False)
        src = self.norm_back(src + self.dropout(out))
        return self.norm_ffn(src + self.dropout(self.ffn(src)))

    def forward_clip(
        self, src: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        """A whole clip: src/pos ``[B*T, S, D]`` (frame-major within a video), mask
        ``[B*T, S]`` -> ``[B*T, S, D]``."""
        if not self.enabled:
            return src
        N, S, D = src.shape
        B, T = N // num_frames, num_frames
        x = self._read(src, pos, mask).view(B, T, self.num_tokens, D)
        times = torch.arange(T, device=src.device)
        for layer in self.mix:
            x = layer(x, x, times, times)
        return self._write_back(src, pos, x.reshape(N, self.num_tokens, D))

    def forward_frame(
        self, src: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, state: MemoryState
    ) -> tuple[torch.Tensor, MemoryState]:
        """One frame per video: src/pos ``[B, S, D]`` with the rolling state of the previous
        frames -> (``[B, S, D]``, new state keeping at most ``K - 1`` frames)."""
        if not self.enabled:
            return src, state
        B, S, D = src.shape
        x = self._read(src, pos, mask)[:, None]  # [B, 1, M, D]
        new_state = []
        for i, layer in enumerate(self.mix):
            past = state[i] if state is not None else x[:, :0]
            if past.shape[0] != B:
                raise ValueError(
                    f"memory state batch {past.shape[0]} does not match frame batch {B}"
                )
            keys = torch.cat([past, x], 1)  # [B, k+1, M, D]
            k_time = torch.arange(keys.shape[1], device=src.device)
            q_time = k_time[-1:]
            new_state.append(keys[:, -(self.window - 1) :] if self.window > 1 else keys[:, :0])
            x = layer(x, keys, q_time, k_time)
        return self._write_back(src, pos, x[:, 0]), new_state
