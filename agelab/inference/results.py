"""The results table: one row per face found, or one row per file that gave none and why.

Columns (empty / null where they do not apply):

* ``file``: the photo or video; ``frame``: the video frame index; ``face``: 0 = largest face
  (per frame on video); ``track``: the face's track id across video frames;
* ``status``: ``ok`` for a face, else why the file gave none (FILE_STATUSES);
* ``x1 y1 x2 y2``: the face box in the file's pixels; ``score``: detector confidence;
* ``age``, ``std``: years (smoothed over the track on video); ``age_raw``: the frame's own
  prediction on video; ``group``: the Adience group name (predicted by group heads, the one the age
  falls in for age heads); ``p_male``: heads with a gender output only.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

OK = "ok"
# Why a file gave no face row: from agelab.data.faces (read and detect) and agelab.inference.media.
FILE_STATUSES = ("no_face", "too_small", "too_blurry", "unreadable", "too_large", "unsupported", "link_outside", "error")
COLUMNS = ("file", "frame", "face", "track", "status", "x1", "y1", "x2", "y2", "score", "age", "std", "age_raw",
           "group", "p_male")


def status_row(file: str | Path, status: str, frame: int | None = None) -> dict:
    return {**dict.fromkeys(COLUMNS), "file": str(file), "status": status, "frame": frame}


def face_row(file: str | Path, index: int, face, box, frame: int | None = None, track: int | None = None,
             age: float | None = None, std: float | None = None, group_name: str | None = None) -> dict:
    """A face's row; ``box`` in the file's pixels; ``age``/``std``/``group_name`` replace the face's
    own (the smoothed values on video, where the face's own age goes to ``age_raw``)."""
    row = status_row(file, OK, frame)
    row.update(face=index, track=track, score=round(face.score, 4), x1=box[0], y1=box[1], x2=box[2], y2=box[3],
               age=_num(face.age if age is None else age), std=_num(face.std if std is None else std),
               age_raw=_num(face.age) if age is not None else None,
               group=face.group_name if group_name is None else group_name,
               p_male=None if face.p_male is None else _num(face.p_male))
    return row


def _num(value: float) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


@dataclass
class Report:
    """All rows, and per file its status: ``ok`` when it gave at least one face."""

    rows: list[dict] = field(default_factory=list)
    file_status: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)

    def add(self, file: str | Path, rows: list[dict], status: str) -> None:
        self.rows.extend(rows)
        self.file_status[str(file)] = status

    @property
    def counts(self) -> Counter:
        return Counter(self.file_status.values())

    @property
    def faces(self) -> int:
        return sum(1 for r in self.rows if r["status"] == OK)

    def summary(self) -> dict:
        return {"files": len(self.file_status), "faces": self.faces, "status": dict(sorted(self.counts.items()))}

    def summary_line(self) -> str:
        counts = self.counts
        parts = [f"{counts.get(OK, 0)} ok ({self.faces} face{'' if self.faces == 1 else 's'})"]
        parts += [f"{n} {status}" for status, n in sorted(counts.items()) if status != OK]
        files = len(self.file_status)
        return f"{files} file{'' if files == 1 else 's'}: " + ", ".join(parts)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """results.csv, results.json (the same rows) and summary.json in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out_dir / "results.csv", "json": out_dir / "results.json", "summary": out_dir / "summary.json"}
        with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in self.rows)
        paths["json"].write_text(json.dumps(self.rows, indent=1, ensure_ascii=False), encoding="utf-8")
        paths["summary"].write_text(json.dumps({**self.summary(), "per_file": self.file_status}, indent=1,
                                               ensure_ascii=False), encoding="utf-8")
        self.outputs.update(paths)
        return paths
