"""Box motion: a constant-velocity Kalman filter on ``(cx, cy, w, h)``.

State ``x = [cx, cy, w, h, vcx, vcy, vw, vh]`` in normalised image coordinates, one frame per
step: ``x' = F x`` with ``F = [[I, I], [0, I]]``; the box is observed directly
(``z = H x``, ``H = [I, 0]``). Noise standard deviations scale with the box (a fixed pixel
noise would be too loose for small objects and too tight for large ones): process
``pos_std * s`` on the box and ``vel_std * s`` on its velocity, measurement
``pos_std * s``, with ``s = sqrt(w h)``. Everything is float64 numpy: the matrices are 8x8
and a tracker holds at most a hundred of them.
"""

from __future__ import annotations

import numpy as np

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)
MIN_SIZE = 1e-3  # boxes never shrink to nothing under the constant-velocity prediction


class BoxKalman:
    """One box's motion state; ``predict()`` one frame ahead, ``update(box)`` with a seen box.

    ``box`` arguments are ``(cx, cy, w, h)`` sequences in [0, 1]."""

    def __init__(self, box, *, pos_std: float = 0.05, vel_std: float = 0.02) -> None:
        box = np.asarray(box, dtype=np.float64).reshape(4)
        self.pos_std, self.vel_std = pos_std, vel_std
        self.mean = np.concatenate([box, np.zeros(4)])
        s = self._scale(box)
        # an unknown velocity starts wide: a few box sizes per frame
        std = np.array([pos_std * s] * 4 + [10 * vel_std * s] * 4)
        self.cov = np.diag(std**2)

    @staticmethod
    def _scale(box: np.ndarray) -> float:
        return float(np.sqrt(max(box[2], MIN_SIZE) * max(box[3], MIN_SIZE)))

    def predict(self) -> None:
        """Advance one frame: ``x = F x``, ``P = F P F^T + Q``."""
        s = self._scale(self.mean[:4])
        q = np.array([self.pos_std * s] * 4 + [self.vel_std * s] * 4) ** 2
        self.mean = _F @ self.mean
        self.mean[2:4] = np.maximum(self.mean[2:4], MIN_SIZE)
        self.cov = _F @ self.cov @ _F.T + np.diag(q)

    def innovation(self) -> tuple[np.ndarray, np.ndarray]:
        """Predicted measurement ``H x`` ``[4]`` and its covariance ``H P H^T + R`` ``[4, 4]``."""
        r = (self.pos_std * self._scale(self.mean[:4])) ** 2
        return _H @ self.mean, _H @ self.cov @ _H.T + r * np.eye(4)

    def update(self, box) -> None:
        """Correct with an observed box: ``K = P H^T S^-1``, ``x += K (z - H x)``,
        ``P = (I - K H) P``."""
        z = np.asarray(box, dtype=np.float64).reshape(4)
        pred, S = self.innovation()
        gain = np.linalg.solve(S, _H @ self.cov).T  # P H^T S^-1 (S and P symmetric)
        self.mean = self.mean + gain @ (z - pred)
        self.mean[2:4] = np.maximum(self.mean[2:4], MIN_SIZE)
        self.cov = (np.eye(8) - gain @ _H) @ self.cov

    @property
    def box(self) -> np.ndarray:
        """The current (predicted or corrected) box ``[4]``, sizes at least ``MIN_SIZE``."""
        return self.mean[:4].copy()
