"""A flight's frames decoded as one track: a hidden Markov model over each frame's retrieved tiles.

Each frame brings its top-k tiles (positions and similarity scores).  The hidden state of a frame is
which of its candidates is where the drone looks; the model scores a path of candidates by

- the **emission**: the frame's retrieval, ``log softmax(score / temperature)`` over its candidates;
- the **motion**: between consecutive frames ``dt`` seconds apart, a move of ``d`` metres costs
  nothing up to ``max_speed · dt`` and a Gaussian falloff (σ = √2 · position_sigma, both tile
  centres being uncertain) beyond it; a course (heading of travel), when the frames give one,
  penalises moves away from it.  A move the model forbids keeps the weight ``jump_probability``:
  every candidate stays reachable, so a track that went wrong can come back (re-acquisition).

Two decoders over the same model: :func:`decode_offline` (Viterbi for the best path, the
forward–backward marginals for each frame's confidence: what a survey after the flight runs) and
:func:`filter_online` (the forward filter alone, each estimate from past frames only: what a drone
in flight can run).  Both are O(frames · k²) with k the candidates per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mean_geo.errors import MeanGeoError
from mean_geo.utils.earth import EARTH_RADIUS_M

#: a frame is lost when the decoder's belief in its own estimate falls below this
LOST_BELOW = 0.5
#: a move this many σ beyond the reachable distance is a jump: the motion model did not allow it
JUMP_SIGMAS = 3.0


@dataclass(frozen=True)
class MotionModel:
    """What the decoder assumes about the drone and the retrieval.

    Attributes:
        max_speed_mps: the fastest ground speed (m/s); moves up to ``max_speed · dt`` are free.
        position_sigma_m: how far a frame's right tile centre may lie from where it looks; about the
            gallery's tile spacing (:func:`tile_spacing_m`), which is what ``localize --track`` uses
            unless told.
        sigma_per_altitude: with per-frame altitudes, σ is at least ``altitude × this`` (a higher photo
            sees more ground, so its best tile's centre can be further off).
        heading_sigma_deg: with per-frame courses, how far (1 σ) a move may turn from the course.
        jump_probability: the weight a forbidden move keeps (re-acquisition after a lost stretch).
        temperature: similarity scores are divided by it before the softmax over a frame's candidates.
    """

    max_speed_mps: float = 20.0
    position_sigma_m: float = 50.0
    sigma_per_altitude: float = 0.25
    heading_sigma_deg: float = 45.0
    jump_probability: float = 1e-3
    temperature: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_speed_mps", "position_sigma_m", "heading_sigma_deg", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise MeanGeoError(f"{name}={value}: expected a positive number")
        if not (math.isfinite(self.sigma_per_altitude) and self.sigma_per_altitude >= 0):
            raise MeanGeoError(f"sigma_per_altitude={self.sigma_per_altitude}: expected a number >= 0")
        if not 0 < self.jump_probability < 1:
            raise MeanGeoError(f"jump_probability={self.jump_probability}: expected a number in (0, 1)")


@dataclass
class Frames:
    """A sequence's candidates, in time order.

    Attributes:
        times_s: ``(n,)`` seconds, strictly increasing.
        positions_m: ``(n, k, 2)`` each candidate's position (east, north) in metres in one local frame.
        scores: ``(n, k)`` each candidate's similarity, best first per frame.
        courses_deg: ``(n,)`` direction of travel (degrees clockwise from north), NaN where unknown.
        altitudes_m: ``(n,)`` height above ground, NaN where unknown.
    """

    times_s: np.ndarray
    positions_m: np.ndarray
    scores: np.ndarray
    courses_deg: np.ndarray | None = None
    altitudes_m: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.times_s = np.asarray(self.times_s, dtype=np.float64)
        self.positions_m = np.asarray(self.positions_m, dtype=np.float64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        n = len(self.times_s)
        if n == 0:
            raise MeanGeoError("a track needs at least one frame")
        if self.positions_m.shape[:1] != (n,) or self.positions_m.ndim != 3 or self.positions_m.shape[2] != 2:
            raise MeanGeoError(f"positions_m: expected shape ({n}, k, 2), got {self.positions_m.shape}")
        if self.scores.shape != self.positions_m.shape[:2]:
            raise MeanGeoError(f"scores: expected shape {self.positions_m.shape[:2]}, got {self.scores.shape}")
        if not np.all(np.isfinite(self.times_s)) or np.any(np.diff(self.times_s) <= 0):
            raise MeanGeoError("frame times must be finite and strictly increasing (two frames at one time?)")
        for name in ("courses_deg", "altitudes_m"):
            value = getattr(self, name)
            value = np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64)
            if value.shape != (n,):
                raise MeanGeoError(f"{name}: expected {n} values, got shape {value.shape}")
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.times_s)


@dataclass
class Track:
    """A decoded track: per frame, the chosen candidate and how sure the decoder is.

    Attributes:
        choice: ``(n,)`` index of the chosen candidate in each frame's list (0 = the frame's own top-1).
        confidence: ``(n,)`` the decoder's probability of its choice (smoothed for offline, filtered
            for online).
        state: per frame ``tracking``, ``lost`` (confidence below :data:`LOST_BELOW`) or ``reacquired``
            (tracking again after lost frames, or reached by a move the motion model forbids).
    """

    choice: np.ndarray
    confidence: np.ndarray
    state: list[str]

    @property
    def overrode_top1(self) -> np.ndarray:
        return self.choice != 0


def _step_sigma(frames: Frames, motion: MotionModel, t: int) -> float:
    """σ of a move from frame ``t - 1`` to frame ``t``: both positions are uncertain, each by at least
    ``position_sigma_m`` and a share of its altitude where known.  Two frames only: this runs once
    per step of the decoders."""
    own = [motion.position_sigma_m] * 2
    for i, altitude in enumerate(frames.altitudes_m[t - 1 : t + 1]):
        if np.isfinite(altitude):
            own[i] = max(own[i], float(altitude) * motion.sigma_per_altitude)
    return math.hypot(*own)


def log_emissions(frames: Frames, motion: MotionModel) -> np.ndarray:
    """``(n, k)`` log-probabilities of each candidate being right, from the retrieval scores alone."""
    z = frames.scores / motion.temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def log_transition(frames: Frames, motion: MotionModel, t: int) -> np.ndarray:
    """``(k, k)`` log-weights of moving from frame ``t - 1``'s candidate ``a`` (row) to frame ``t``'s
    candidate ``b`` (column)."""
    dt = frames.times_s[t] - frames.times_s[t - 1]
    sigma = _step_sigma(frames, motion, t)
    step = frames.positions_m[t][None, :, :] - frames.positions_m[t - 1][:, None, :]
    dist = np.hypot(step[..., 0], step[..., 1])
    excess = np.maximum(dist - motion.max_speed_mps * dt, 0.0)
    log_move = -0.5 * (excess / sigma) ** 2
    course = frames.courses_deg[t]
    if np.isfinite(course):
        bearing = np.degrees(np.arctan2(step[..., 0], step[..., 1]))  # clockwise from north
        turn = (bearing - course + 180.0) % 360.0 - 180.0
        far = dist > sigma  # a move within the position noise has no direction
        log_move = log_move - np.where(far, 0.5 * (turn / motion.heading_sigma_deg) ** 2, 0.0)
    eps = motion.jump_probability
    return np.logaddexp(np.log1p(-eps) + log_move, math.log(eps))


def _is_jump(frames: Frames, motion: MotionModel, t: int, a: int, b: int) -> bool:
    dt = frames.times_s[t] - frames.times_s[t - 1]
    dist = float(np.hypot(*(frames.positions_m[t, b] - frames.positions_m[t - 1, a])))
    return dist > motion.max_speed_mps * dt + JUMP_SIGMAS * _step_sigma(frames, motion, t)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def _states(frames: Frames, motion: MotionModel, choice: np.ndarray, confidence: np.ndarray) -> list[str]:
    states: list[str] = []
    for t in range(len(frames)):
        if confidence[t] < LOST_BELOW:
            states.append("lost")
        elif t > 0 and (states[-1] == "lost" or _is_jump(frames, motion, t, int(choice[t - 1]), int(choice[t]))):
            states.append("reacquired")
        else:
            states.append("tracking")
    return states


@dataclass
class _Model:
    """A sequence's model terms and its forward pass, computed once for both decoders."""

    emit: np.ndarray  # (n, k) log emissions
    transitions: list[np.ndarray]  # n - 1 (k, k) log transitions
    alpha: np.ndarray  # (n, k) normalised log filtering distributions


def _model(frames: Frames, motion: MotionModel) -> _Model:
    emit = log_emissions(frames, motion)
    transitions = [log_transition(frames, motion, t) for t in range(1, len(frames))]
    alpha = np.empty_like(emit)
    alpha[0] = emit[0] - _logsumexp(emit[0], 0)
    for t in range(1, len(emit)):
        a = _logsumexp(alpha[t - 1][:, None] + transitions[t - 1], 0) + emit[t]
        alpha[t] = a - _logsumexp(a, 0)
    return _Model(emit, transitions, alpha)


def _offline(frames: Frames, motion: MotionModel, model: _Model) -> Track:
    emit, transitions = model.emit, model.transitions
    n, k = emit.shape
    best = emit[0].copy()
    back = np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        scores = best[:, None] + transitions[t - 1]
        back[t] = np.argmax(scores, axis=0)
        best = scores[back[t], np.arange(k)] + emit[t]
    choice = np.zeros(n, dtype=np.int64)
    choice[-1] = int(np.argmax(best))
    for t in range(n - 1, 0, -1):
        choice[t - 1] = back[t, choice[t]]
    confidence = _marginals(model)[np.arange(n), choice]
    return Track(choice, confidence, _states(frames, motion, choice, confidence))


def _marginals(model: _Model) -> np.ndarray:
    emit, transitions = model.emit, model.transitions
    beta = np.zeros_like(emit)
    for t in range(len(emit) - 2, -1, -1):
        b = _logsumexp(transitions[t] + (emit[t + 1] + beta[t + 1])[None, :], 1)
        beta[t] = b - _logsumexp(b, 0)
    post = model.alpha + beta
    post = post - _logsumexp(post, 1)[:, None]
    return np.exp(post)


def _online(frames: Frames, motion: MotionModel, model: _Model) -> Track:
    posterior = np.exp(model.alpha)
    choice = np.argmax(posterior, axis=1)
    confidence = posterior[np.arange(len(frames)), choice]
    return Track(choice, confidence, _states(frames, motion, choice, confidence))


def decode_offline(frames: Frames, motion: MotionModel) -> Track:
    """The most probable path over every frame (Viterbi), with each choice's smoothed probability.

    Args:
        frames: the sequence's candidates.
        motion: the motion and retrieval model.

    Returns:
        The track; ``confidence`` is the forward–backward marginal of each chosen candidate.
    """
    return _offline(frames, motion, _model(frames, motion))


def filter_online(frames: Frames, motion: MotionModel) -> Track:
    """Each frame's most probable candidate given that frame and the ones before it only.

    Args:
        frames: the sequence's candidates.
        motion: the motion and retrieval model.

    Returns:
        The track; ``confidence`` is the filtered probability of each choice.
    """
    return _online(frames, motion, _model(frames, motion))


def decode_both(frames: Frames, motion: MotionModel) -> tuple[Track, Track]:
    """``(filter_online, decode_offline)`` over one computation of the model's terms and forward pass."""
    model = _model(frames, motion)
    return _online(frames, motion, model), _offline(frames, motion, model)


def to_local_m(latlon: np.ndarray, origin: tuple[float, float]) -> np.ndarray:
    """``(..., 2)`` lat/lon (degrees) → east/north metres about ``origin`` (equirectangular: within a
    flight's tens of kilometres it is exact to well under a metre per kilometre)."""
    latlon = np.asarray(latlon, dtype=np.float64)
    lat0, lon0 = origin
    north = np.radians(latlon[..., 0] - lat0) * EARTH_RADIUS_M
    east = np.radians(latlon[..., 1] - lon0) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    return np.stack([east, north], axis=-1)


def tile_spacing_m(latlon: np.ndarray, sample: int = 2000) -> float:
    """The median distance from a tile's centre to its nearest neighbour's, in metres: how coarse
    the gallery places a frame (tiles every 100 m: a frame's right tile is up to ~70 m off).

    Args:
        latlon: ``(G, 2)`` tile centres (degrees); at least two distinct ones.
        sample: at most this many tiles are measured against all (the median needs no more).

    Returns:
        The spacing in metres.

    Raises:
        MeanGeoError: fewer than two distinct tile positions.
    """
    import torch

    points = np.unique(np.asarray(latlon, dtype=np.float64).reshape(-1, 2), axis=0)
    if len(points) < 2:
        raise MeanGeoError("the gallery has fewer than two tile positions: no spacing to measure")
    local = torch.from_numpy(to_local_m(points, (float(points[:, 0].mean()), float(points[:, 1].mean()))))
    picked = local[torch.from_numpy(np.random.default_rng(0).permutation(len(points))[:sample])]
    nearest = torch.full((len(picked),), float("inf"), dtype=torch.float64)
    for start in range(0, len(local), 65536):
        d = torch.cdist(picked, local[start : start + 65536])
        d[d == 0] = float("inf")  # the tile itself
        nearest = torch.minimum(nearest, d.min(dim=1).values)
    return float(nearest.median())
