"""BoxKalman: the constant-velocity Kalman filter of a track's box (float64 numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from gmpvis.association.motion import MIN_SIZE, BoxKalman


def _textbook_step(x, P, z, pos_std, vel_std):
    """One predict + update with explicit 8x8 matrices; the covariance update in Joseph
    form ``(I - KH) P (I - KH)^T + K R K^T`` (equal to ``(I - KH) P`` for the optimal gain,
    a different formula from the one under test)."""
    F = np.block([[np.eye(4), np.eye(4)], [np.zeros((4, 4)), np.eye(4)]])
    H = np.hstack([np.eye(4), np.zeros((4, 4))])
    s = np.sqrt(max(x[2], MIN_SIZE) * max(x[3], MIN_SIZE))
    Q = np.diag([(pos_std * s) ** 2] * 4 + [(vel_std * s) ** 2] * 4)
    x = F @ x
    x[2:4] = np.maximum(x[2:4], MIN_SIZE)
    P = F @ P @ F.T + Q
    if z is None:
        return x, P
    s = np.sqrt(x[2] * x[3])
    R = (pos_std * s) ** 2 * np.eye(4)
    S = H @ P @ H.T + R
    K = P @ H.T @ np.linalg.inv(S)
    x = x + K @ (z - H @ x)
    x[2:4] = np.maximum(x[2:4], MIN_SIZE)
    IKH = np.eye(8) - K @ H
    return x, IKH @ P @ IKH.T + K @ R @ K.T


def test_first_predict_and_update_by_hand():
    """Box (0.5, 0.5, 0.2, 0.2): s = 0.2, position std 0.05 s = 0.01, initial velocity std
    10 * 0.02 s = 0.04. Each coordinate is an independent 2x2 (position, velocity) problem."""
    kf = BoxKalman([0.5, 0.5, 0.2, 0.2], pos_std=0.05, vel_std=0.02)
    np.testing.assert_array_equal(kf.mean, [0.5, 0.5, 0.2, 0.2, 0, 0, 0, 0])
    np.testing.assert_allclose(np.diag(kf.cov), [1e-4] * 4 + [1.6e-3] * 4, rtol=1e-12)
    kf.predict()
    # P_pp = 1e-4 + 1.6e-3 + q_p (1e-4); P_pv = 1.6e-3; P_vv = 1.6e-3 + q_v ((0.004)^2)
    np.testing.assert_array_equal(kf.mean, [0.5, 0.5, 0.2, 0.2, 0, 0, 0, 0])
    for c in range(4):
        block = kf.cov[np.ix_([c, c + 4], [c, c + 4])]
        np.testing.assert_allclose(block, [[1.8e-3, 1.6e-3], [1.6e-3, 1.616e-3]], rtol=1e-12)
    kf.update([0.52, 0.5, 0.2, 0.2])
    # S = 1.8e-3 + r (1e-4) = 1.9e-3; gains 18/19 (position), 16/19 (velocity)
    expected = [0.5 + 0.02 * 18 / 19, 0.5, 0.2, 0.2, 0.02 * 16 / 19, 0, 0, 0]
    np.testing.assert_allclose(kf.mean, expected, rtol=1e-12, atol=1e-15)
    block = kf.cov[np.ix_([0, 4], [0, 4])]
    p_vv = 1.616e-3 - 16 / 19 * 1.6e-3
    np.testing.assert_allclose(
        block, [[1.8e-3 / 19, 1.6e-3 / 19], [1.6e-3 / 19, p_vv]], rtol=1e-10, atol=1e-15
    )
    np.testing.assert_allclose(kf.box, expected[:4], rtol=1e-12)


@pytest.mark.parametrize("pos_std, vel_std", [(0.05, 0.02), (0.1, 0.005)])
def test_steps_match_textbook_matrices(pos_std, vel_std):
    rng = np.random.default_rng(3)
    box = np.array([0.4, 0.6, 0.15, 0.25])
    kf = BoxKalman(box, pos_std=pos_std, vel_std=vel_std)
    x, P = kf.mean.copy(), kf.cov.copy()
    for step in range(7):
        box = box + np.array([0.01, -0.02, 0.002, 0.001]) + rng.normal(0, 0.003, 4)
        z = None if step in (2, 3) else box  # two frames without a sighting
        x, P = _textbook_step(x, P, z, pos_std, vel_std)
        kf.predict()
        if z is not None:
            kf.update(z)
        np.testing.assert_allclose(kf.mean, x, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(kf.cov, P, rtol=1e-8, atol=1e-15)


def test_constant_velocity_prediction_converges():
    velocity = np.array([0.012, -0.007, 0.001, -0.0005])
    box0 = np.array([0.2, 0.7, 0.1, 0.12])
    kf = BoxKalman(box0)
    for t in range(1, 25):
        kf.predict()
        kf.update(box0 + t * velocity)
    np.testing.assert_allclose(kf.mean[4:], velocity, atol=1e-5)
    kf.predict()  # one frame ahead without a sighting
    np.testing.assert_allclose(kf.box, box0 + 25 * velocity, atol=1e-5)
    for _ in range(3):  # three more: the motion carries on
        kf.predict()
    np.testing.assert_allclose(kf.box, box0 + 28 * velocity, atol=1e-4)


def test_sizes_never_below_min_size():
    kf = BoxKalman([0.5, 0.5, 0.1, 0.1])
    kf.predict()
    kf.update([0.5, 0.5, 0.01, 0.01])  # shrinking fast: negative size velocity
    assert kf.mean[6] < 0 and kf.mean[7] < 0
    for _ in range(20):
        kf.predict()
        assert (kf.box[2:] >= MIN_SIZE).all()
        S = kf.innovation()[1]
        assert np.isfinite(S).all()
    kf.update([0.5, 0.5, 0.0, -0.1])  # a degenerate observation is clamped as well
    assert (kf.box[2:] >= MIN_SIZE).all() and np.isfinite(kf.mean).all()
    assert (BoxKalman([0.5, 0.5, 0.0, 0.0]).box[2:] >= 0).all()  # no NaN scale at birth
    assert np.isfinite(BoxKalman([0.5, 0.5, 0.0, 0.0]).cov).all()


def test_innovation_covariance_symmetric_positive_definite():
    rng = np.random.default_rng(7)
    for _ in range(5):
        box = np.concatenate([rng.uniform(0.2, 0.8, 2), rng.uniform(0.02, 0.4, 2)])
        kf = BoxKalman(box, pos_std=rng.uniform(0.01, 0.1), vel_std=rng.uniform(0.005, 0.05))
        for _ in range(12):
            kf.predict()
            if rng.random() < 0.7:
                box = box + rng.normal(0, 0.01, 4)
                box[2:] = np.abs(box[2:]) + 0.01
                kf.update(box)
            pred, S = kf.innovation()
            np.testing.assert_array_equal(pred, kf.mean[:4])
            np.testing.assert_allclose(S, S.T, rtol=1e-9, atol=1e-15)
            assert np.linalg.eigvalsh(0.5 * (S + S.T)).min() > 0
            np.testing.assert_allclose(kf.cov, kf.cov.T, rtol=1e-9, atol=1e-15)


def test_box_is_a_copy_and_shape_checked():
    kf = BoxKalman((0.3, 0.3, 0.1, 0.1))
    b = kf.box
    b[0] = 9.0
    assert kf.box[0] == 0.3
    with pytest.raises(ValueError):
        BoxKalman([0.1, 0.2, 0.3])
