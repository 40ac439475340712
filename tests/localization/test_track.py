"""The track decoders against brute force over every path, and their motion model by hand."""

import itertools
import math

import numpy as np
import pytest

from mean_geo.errors import MeanGeoError
from mean_geo.localization.track import (
    LOST_BELOW,
    Frames,
    MotionModel,
    decode_offline,
    filter_online,
    log_emissions,
    log_transition,
    to_local_m,
)


def tiny_graph(seed: int, n: int = 5, k: int = 3, courses: bool = False) -> Frames:
    rng = np.random.default_rng(seed)
    return Frames(
        times_s=np.cumsum(rng.uniform(0.5, 3.0, n)),
        positions_m=rng.uniform(0, 150, (n, k, 2)),
        scores=np.sort(rng.uniform(0.2, 0.9, (n, k)), axis=1)[:, ::-1],
        courses_deg=rng.uniform(0, 360, n) if courses else None,
        altitudes_m=rng.uniform(50, 400, n) if courses else None,
    )


def path_log_score(frames: Frames, motion: MotionModel, path: tuple[int, ...]) -> float:
    """The joint log-weight of one path, straight from the model's definition."""
    emit = log_emissions(frames, motion)
    total = emit[0, path[0]]
    for t in range(1, len(path)):
        total += log_transition(frames, motion, t)[path[t - 1], path[t]] + emit[t, path[t]]
    return float(total)


MOTION = MotionModel(max_speed_mps=15.0, position_sigma_m=20.0, temperature=0.1, jump_probability=1e-2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("courses", [False, True])
def test_offline_decoder_is_the_best_path_and_its_marginals_sum_over_paths(seed, courses):
    frames = tiny_graph(seed, courses=courses)
    n, k = frames.scores.shape
    paths = list(itertools.product(range(k), repeat=n))
    scores = np.array([path_log_score(frames, MOTION, p) for p in paths])
    track = decode_offline(frames, MOTION)
    assert tuple(track.choice) == paths[int(np.argmax(scores))]
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    for t in range(n):
        marginal = sum(w for w, p in zip(weights, paths, strict=True) if p[t] == track.choice[t])
        assert track.confidence[t] == pytest.approx(marginal, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_online_filter_uses_only_the_past(seed):
    frames = tiny_graph(seed, n=4, courses=seed % 2 == 1)
    k = frames.scores.shape[1]
    track = filter_online(frames, MOTION)
    for t in range(len(frames)):
        prefix = Frames(
            frames.times_s[: t + 1],
            frames.positions_m[: t + 1],
            frames.scores[: t + 1],
            frames.courses_deg[: t + 1],
            frames.altitudes_m[: t + 1],
        )
        paths = list(itertools.product(range(k), repeat=t + 1))
        scores = np.array([path_log_score(prefix, MOTION, p) for p in paths])
        weights = np.exp(scores - scores.max())
        belief = np.array([sum(w for w, p in zip(weights, paths, strict=True) if p[-1] == j) for j in range(k)])
        belief /= belief.sum()
        assert track.choice[t] == int(np.argmax(belief))
        assert track.confidence[t] == pytest.approx(belief.max(), rel=1e-9)
    # the future does not change the past: the same estimates with frames appended
    longer = tiny_graph(seed, n=6, courses=seed % 2 == 1)
    longer.times_s[:4], longer.positions_m[:4], longer.scores[:4] = frames.times_s, frames.positions_m, frames.scores
    longer.courses_deg[:4], longer.altitudes_m[:4] = frames.courses_deg, frames.altitudes_m
    longer.times_s[4:] = frames.times_s[-1] + np.array([1.0, 2.0])
    assert list(filter_online(longer, MOTION).choice[:4]) == list(track.choice)


def test_motion_model_by_hand():
    """Two frames 2 s apart, candidates at known distances: free within speed × dt, a Gaussian falloff
    beyond it, the jump floor far away, and a course that penalises turning back."""
    frames = Frames(
        times_s=[0.0, 2.0],
        positions_m=[[[0, 0], [0, 0]], [[0, 29], [0, 70]]],  # 29 m: reachable at 15 m/s, beyond σ; 70 m: 40 m beyond
        scores=[[0.5, 0.5], [0.5, 0.5]],
        courses_deg=[math.nan, 180.0],  # heading south; both moves are north
    )
    t = log_transition(frames, MOTION, 1)
    sigma = math.hypot(20.0, 20.0)
    eps = MOTION.jump_probability
    move_29 = math.exp(-0.5 * (180 / MOTION.heading_sigma_deg) ** 2)  # 29 m > σ: the course counts
    move_70 = math.exp(-0.5 * (40 / sigma) ** 2 - 0.5 * (180 / MOTION.heading_sigma_deg) ** 2)
    assert t[0, 0] == pytest.approx(math.log((1 - eps) * move_29 + eps))
    assert t[0, 1] == pytest.approx(math.log((1 - eps) * move_70 + eps))
    frames.courses_deg[1] = 0.0  # heading north: no turn
    t = log_transition(frames, MOTION, 1)
    assert t[0, 0] == pytest.approx(math.log(1.0))
    assert t[0, 1] == pytest.approx(math.log((1 - eps) * math.exp(-0.5 * (40 / sigma) ** 2) + eps))


def test_a_wrong_top1_between_consistent_frames_is_overridden_and_a_lost_stretch_reacquired():
    # a drone flying east at 10 m/s; each frame's candidates: the truth and a far decoy
    n = 12
    truth = np.stack([np.arange(n) * 10.0, np.zeros(n)], axis=1)
    decoy = truth + np.array([3000.0, -2000.0])
    positions = np.stack([truth, decoy], axis=1)
    scores = np.tile([0.60, 0.55], (n, 1))
    scores[5] = [0.55, 0.60]  # frame 5: the decoy wins the retrieval
    positions[5] = positions[5][::-1]
    frames = Frames(np.arange(n, dtype=float), positions, scores)
    motion = MotionModel(max_speed_mps=15.0, position_sigma_m=20.0, temperature=0.05)
    for track in (decode_offline(frames, motion), filter_online(frames, motion)):
        chosen = positions[np.arange(n), track.choice]
        assert np.allclose(chosen, truth)
        assert list(np.flatnonzero(track.overrode_top1)) == [5]
    # a stretch where only scattered decoys are offered (frames 4-7), decoys scattered everywhere:
    # the online filter has to follow a decoy there, and comes back to the truth after it
    rng = np.random.default_rng(0)
    scattered = rng.uniform(-5000, 5000, (n, 2, 2))
    positions = np.stack([truth, scattered[:, 0]], axis=1)
    positions[4:8] = scattered[4:8]
    frames = Frames(np.arange(n, dtype=float), positions, np.tile([0.6, 0.59], (n, 1)))
    online = filter_online(frames, motion)
    assert np.allclose(positions[np.arange(8, n), online.choice[8:]], truth[8:])
    assert np.allclose(positions[np.arange(4), online.choice[:4]], truth[:4])
    assert online.state[8] == "reacquired" and set(online.state[9:]) == {"tracking"}


def test_states_and_confidence_are_consistent():
    frames = tiny_graph(3, n=30, k=5)
    for track in (decode_offline(frames, MOTION), filter_online(frames, MOTION)):
        assert len(track.state) == 30 and set(track.state) <= {"tracking", "lost", "reacquired"}
        lost = np.array([s == "lost" for s in track.state])
        assert np.array_equal(lost, track.confidence < LOST_BELOW)
        assert np.all((track.confidence > 0) & (track.confidence <= 1 + 1e-12))


def test_bad_sequences_are_one_line():
    with pytest.raises(MeanGeoError, match="strictly increasing"):
        Frames([0.0, 1.0, 1.0], np.zeros((3, 2, 2)), np.zeros((3, 2)))
    with pytest.raises(MeanGeoError, match="positions_m"):
        Frames([0.0, 1.0], np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(MeanGeoError, match="max_speed_mps"):
        MotionModel(max_speed_mps=0.0)
    with pytest.raises(MeanGeoError, match="jump_probability"):
        MotionModel(jump_probability=1.0)


def test_local_metres_match_haversine():
    from mean_geo.inference.geo import haversine_m

    origin = (31.23, 121.47)
    point = (31.2345, 121.4812)
    east, north = to_local_m(np.array(point), origin)
    assert math.hypot(east, north) == pytest.approx(haversine_m(origin, point), rel=1e-3)


def test_a_gap_in_time_is_a_longer_allowed_move_not_an_error():
    """Frames 1 s apart, then 10 minutes of nothing: a move of 5 km after the gap is within reach."""
    truth = np.array([[0, 0], [10, 0], [20, 0], [5020, 0], [5030, 0]], dtype=float)
    decoy = truth + np.array([0.0, 3000.0])
    decoy[3] = [30, 3000]  # after the gap the decoy is the one near where the drone was
    positions = np.stack([truth, decoy], axis=1)
    frames = Frames([0.0, 1.0, 2.0, 602.0, 603.0], positions, np.tile([0.6, 0.55], (5, 1)))
    for track in (decode_offline(frames, MOTION), filter_online(frames, MOTION)):
        assert list(track.choice) == [0, 0, 0, 0, 0]


def test_the_printed_summary_names_lost_stretches_and_reacquisitions():
    from mean_geo.inference.flight import TrackPoint
    from mean_geo.localize import state_summary

    states = ["tracking", "lost", "lost", "reacquired", "tracking", "lost", "reacquired"]
    points = [TrackPoint(0.0, 0.0, 0.9, False, s, "t", 1) for s in states]
    assert (
        state_summary(points) == "lost at frames 1-2; re-acquired at frame 3; lost at frame 5; re-acquired at frame 6"
    )
    assert state_summary(points[:1]) == "tracked throughout"


def test_both_decoders_at_once_equal_each_alone():
    from mean_geo.localization.track import decode_both

    frames = tiny_graph(5, n=20, k=6, courses=True)
    online, offline = decode_both(frames, MOTION)
    for together, alone in ((online, filter_online(frames, MOTION)), (offline, decode_offline(frames, MOTION))):
        assert np.array_equal(together.choice, alone.choice) and together.state == alone.state
        assert np.array_equal(together.confidence, alone.confidence)
