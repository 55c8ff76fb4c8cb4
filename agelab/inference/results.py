"""The results table: one row per face found, or one row per file that gave none and why.

Columns (empty / null where they do not apply):

* ``file``: the photo or video (agelab.data.names.printable: a name that is not UTF-8, or that holds
  a newline, escaped); ``frame``: the video frame index; ``face``: 0 = largest face
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


class Report:
    """A batch's results, written to ``out_dir`` as they come: each file's rows go to results.csv (the
    header first) as soon as the file is added, flushed, so a batch that ends early keeps what was done;
    results.json (the same rows) and summary.json follow when its ``with`` block ends without error.
    Per file its status: ``ok`` when it gave at least one face."""

    def __init__(self, out_dir: str | Path):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.file_status: dict[str, str] = {}
        self.outputs: dict[str, Path] = {"csv": out_dir / "results.csv"}
        self._json = {"json": out_dir / "results.json", "summary": out_dir / "summary.json"}
        self._csv = open(self.outputs["csv"], "w", newline="", encoding="utf-8")
        self._table = csv.DictWriter(self._csv, fieldnames=COLUMNS)
        self._table.writeheader()
        self._csv.flush()

    def add(self, file: str | Path, rows: list[dict], status: str) -> None:
        self._table.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        self._csv.flush()
        self.rows.extend(rows)
        self.file_status[str(file)] = status

    def __enter__(self) -> Report:
        return self

    def __exit__(self, error_type, *_) -> None:
        self._csv.close()
        if error_type is not None:  # a batch that did not finish: its rows so far stay in results.csv
            return
        self._json["json"].write_text(json.dumps(self.rows, indent=1, ensure_ascii=False), encoding="utf-8")
        self._json["summary"].write_text(json.dumps({**self.summary(), "per_file": self.file_status}, indent=1,
                                                    ensure_ascii=False), encoding="utf-8")
        self.outputs.update(self._json)

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
