"""Steady ages on video: follow each face from frame to frame and smooth its age over time.

Faces are matched to the tracks of the previous frames by box overlap (IoU, greedy, best pairs
first). A matched track's age and spread become exponential moving averages,
``smoothed = alpha * new + (1 - alpha) * smoothed`` (alpha = 1: no smoothing); an unmatched face
starts a new track; a track unseen for more than ``max_missed`` processed frames ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from agelab.errors import ConfigError, require_int


def iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: tuple
    age: float
    std: float
    missed: int = 0
    length: int = 1  # frames seen


class FaceTracker:
    def __init__(self, alpha: float = 0.3, min_iou: float = 0.3, max_missed: int = 5):
        if not 0 < alpha <= 1:
            raise ConfigError(f"video.smoothing.alpha must be in (0, 1], got {alpha}")
        if not 0 <= min_iou < 1:
            raise ConfigError(f"video.smoothing.min_iou must be in [0, 1), got {min_iou}")
        require_int("video.smoothing.max_missed", max_missed, 0)
        self.alpha, self.min_iou, self.max_missed = float(alpha), float(min_iou), max_missed
        self.tracks: list[Track] = []
        self.next_id = 0

    def update(self, boxes: list, ages: list[float], stds: list[float]) -> list[Track]:
        """The track of each face of the new frame (same order), its age and spread smoothed."""
        pairs = sorted(((iou(t.box, b), ti, fi) for ti, t in enumerate(self.tracks) for fi, b in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, Track] = {}
        used = set()
        for overlap, ti, fi in pairs:
            if overlap < self.min_iou or overlap == 0:
                break
            if ti in used or fi in assigned:
                continue
            used.add(ti)
            track = self.tracks[ti]
            track.box, track.missed, track.length = tuple(boxes[fi]), 0, track.length + 1
            track.age = self.alpha * ages[fi] + (1 - self.alpha) * track.age
            track.std = self.alpha * stds[fi] + (1 - self.alpha) * track.std
            assigned[fi] = track
        for ti, track in enumerate(self.tracks):
            if ti not in used:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for fi, box in enumerate(boxes):
            if fi not in assigned:
                track = Track(self.next_id, tuple(box), float(ages[fi]), float(stds[fi]))
                self.next_id += 1
                self.tracks.append(track)
                assigned[fi] = track
        return [assigned[fi] for fi in range(len(boxes))]
