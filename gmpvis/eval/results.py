"""YouTube-VIS JSON I/O for evaluation: ground truth and results, read, checked and written.

Everything that reaches the evaluator goes through here, so every malformed input fails with a
``ValueError`` that names the file, the video, the result index and the field at fault, instead
of failing deep inside numpy or pycocotools.

Formats (DESIGN.md "Formats"):
  ground truth: ``videos`` (id, height, width, length | file_names), ``categories`` (id, name),
  ``annotations`` (id, video_id, category_id, iscrowd, segmentations: one RLE / polygon / null per
  frame, areas).
  results: a list of ``{video_id, category_id, score, segmentations}``, one compressed RLE
  (``counts`` a string) or null per frame. ``results.zip`` holds ``results.json`` at its root, as
  the CodaLab servers expect.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

RESULT_FIELDS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class Video:
    height: int
    width: int
    length: int


@dataclass
class Instance:
    """One GT annotation or one result with its masks normalised to compressed RLE.

    ``segs``: ``length`` entries, an RLE dict or None; ``areas`` float64 ``[length]`` pixel
    counts (0 where null); ``avg_area``: mean of the non-zero per-frame areas (0 if none), the
    size that decides small/medium/large as the official YouTube-VIS evaluation does.
    """

    id: int
    video_id: int
    category_id: int
    score: float
    iscrowd: bool
    segs: list
    areas: np.ndarray
    avg_area: float


@dataclass
class GroundTruth:
    videos: dict[int, Video]
    categories: dict[int, str]  # category id -> name
    annotations: list[Instance]


def read_json(path: str | Path):
    """Parse a JSON file (or the ``results.json`` inside a ``.zip``); bad content -> ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [n for n in zf.namelist() if n.endswith(".json")]
                if not names:
                    raise ValueError(f"{path}: the zip holds no .json file")
                # CodaLab reads results.json at the root; accept a single JSON elsewhere too.
                name = "results.json" if "results.json" in names else names[0]
                data = zf.read(name)
                path = Path(f"{path}:{name}")
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path}: not a valid zip file ({exc})") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file, cannot be JSON") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON (truncated?): {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None


def _need(obj: dict, key: str, where: str):
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{where}: missing field '{key}'")
    return obj[key]


def _int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return int(value)


def _to_rle(seg, hw: list[int], where: str, t: int):
    """One frame's segmentation -> compressed RLE dict, or None where the frame is empty.

    Accepts compressed RLE (counts str/bytes), uncompressed RLE (counts list) and polygons
    (list of flat xy lists, GT only); a falsy entry (null, [], {}) means "absent". ``hw`` is
    the video's ``[height, width]``.
    """
    if not seg:
        return None
    if type(seg) is dict and seg.get("size") == hw and type(seg.get("counts")) is str:
        return seg  # the common case, checked without building any message
    where = f"{where} frame {t}"
    if isinstance(seg, list):  # polygon parts, merged into one mask
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
            raise ValueError(f"{where}: a polygon must be lists of >= 3 (x, y) pairs")
        return mask_utils.merge(mask_utils.frPyObjects(seg, *hw))
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise ValueError(f"{where}: expected an RLE dict with 'size' and 'counts', or null")
    size = seg["size"]
    ok = isinstance(size, list | tuple) and all(isinstance(s, numbers.Integral) for s in size)
    if not ok or [int(s) for s in size] != hw:
        raise ValueError(f"{where}: RLE size {size} differs from the video size {hw} (h, w)")
    counts = seg["counts"]
    if isinstance(counts, list):  # uncompressed: runs must cover the h*w frame exactly
        if sum(counts) != hw[0] * hw[1]:
            raise ValueError(f"{where}: uncompressed RLE runs sum to {sum(counts)}, not h*w")
        return mask_utils.frPyObjects({"size": hw, "counts": counts}, *hw)
    if not isinstance(counts, str | bytes):
        raise ValueError(f"{where}: RLE 'counts' must be a string, got {type(counts).__name__}")
    return {"size": hw, "counts": counts}


def _instance(ann: dict, where: str, video: Video) -> tuple[list, np.ndarray]:
    """Check and normalise ``ann['segmentations']``; returns (RLE-or-None list, areas [T])."""
    segs = _need(ann, "segmentations", where)
    if not isinstance(segs, list):
        raise ValueError(f"{where}: 'segmentations' must be a list, got {type(segs).__name__}")
    if len(segs) != video.length:
        raise ValueError(
            f"{where}: 'segmentations' has {len(segs)} entries but the video has "
            f"{video.length} frames"
        )
    hw = [video.height, video.width]
    rles = [_to_rle(s, hw, where, t) for t, s in enumerate(segs)]
    areas = np.zeros(video.length, dtype=np.float64)
    present = [t for t, r in enumerate(rles) if r is not None]
    if present:  # one pycocotools call for all frames
        areas[present] = mask_utils.area([rles[t] for t in present])
        # pycocotools decodes any string; a corrupt one often claims more pixels than exist.
        over = np.flatnonzero(areas > hw[0] * hw[1])
        if over.size:
            raise ValueError(
                f"{where} frame {over[0]}: RLE 'counts' decode to {int(areas[over[0]])} pixels, "
                f"more than the {hw[0]}x{hw[1]} frame holds (corrupt string?)"
            )
    return rles, areas


def _mean_nonzero(areas) -> float:
    # Official semantics: mean over the truthy per-frame areas (null and 0 both skipped).
    if isinstance(areas, np.ndarray):
        nz = areas[areas > 0]
    else:
        nz = np.array([a for a in areas if a], dtype=np.float64)
    return float(nz.mean()) if nz.size else 0.0


def load_gt(gt: str | Path | dict) -> GroundTruth:
    """Parse and check a YouTube-VIS annotation file (path or loaded dict)."""
    src = str(gt) if isinstance(gt, str | Path) else "ground truth"
    data = read_json(gt) if isinstance(gt, str | Path) else gt
    if not isinstance(data, dict):
        raise ValueError(f"{src}: expected a JSON object, got {type(data).__name__}")
    videos: dict[int, Video] = {}
    for i, v in enumerate(_need(data, "videos", src)):
        where = f"{src}: videos[{i}]"
        vid = _int(_need(v, "id", where), f"{where}.id")
        if vid in videos:
            raise ValueError(f"{where}: duplicate video id {vid}")
        length = v.get("length", len(v.get("file_names", [])))
        h, w = _need(v, "height", where), _need(v, "width", where)
        videos[vid] = Video(_int(h, f"{where}.height"), _int(w, f"{where}.width"), int(length))
        if videos[vid].length <= 0:
            raise ValueError(f"{where}: needs 'length' or 'file_names' (video {vid})")
    categories: dict[int, str] = {}
    for i, c in enumerate(_need(data, "categories", src)):
        where = f"{src}: categories[{i}]"
        cid = _int(_need(c, "id", where), f"{where}.id")
        if cid in categories:
            raise ValueError(f"{where}: duplicate category id {cid}")
        categories[cid] = str(c.get("name", cid))
    anns = []
    for i, a in enumerate(_need(data, "annotations", src)):
        where = f"{src}: annotations[{i}]"
        vid = _int(_need(a, "video_id", where), f"{where}.video_id")
        cid = _int(_need(a, "category_id", where), f"{where}.category_id")
        if vid not in videos:
            raise ValueError(f"{where}: unknown video_id {vid}")
        if cid not in categories:
            raise ValueError(f"{where}: unknown category_id {cid}")
        where = f"{where} (video {vid})"
        rles, areas = _instance(a, where, videos[vid])
        # The size class uses the annotation's own 'areas' field, as the official code does.
        stored = a.get("areas")
        if stored is not None:
            if not isinstance(stored, list) or len(stored) != videos[vid].length:
                raise ValueError(f"{where}: 'areas' must be a list of {videos[vid].length} entries")
            if any(x is not None and not isinstance(x, numbers.Real) for x in stored):
                raise ValueError(f"{where}: 'areas' entries must be numbers or null")
        avg = _mean_nonzero(stored if stored is not None else areas)
        ann_id = _int(a.get("id", i + 1), f"{where}.id")
        crowd = bool(a.get("iscrowd", 0))
        anns.append(Instance(ann_id, vid, cid, 1.0, crowd, rles, areas, avg))
    return GroundTruth(videos, categories, anns)


def load_results(results: str | Path | list) -> list:
    """A results list from a path (``.json`` or ``.zip``) or as given; checks it is a list."""
    src = str(results) if isinstance(results, str | Path) else "results"
    data = read_json(results) if isinstance(results, str | Path) else results
    if not isinstance(data, list):
        raise ValueError(f"{src}: results must be a JSON list, got {type(data).__name__}")
    return data


def _score(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}.score: expected a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{where}.score: must be finite, got {value!r}")
    return float(value)


def check_results(results: list, gt: GroundTruth) -> list[Instance]:
    """Validate every result against the GT videos/categories -> list of Instance.

    Result ids are ``index + 1`` as in the official loader; ``iscrowd`` is always 0.
    """
    out = []
    for i, r in enumerate(results):
        where = f"result {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(r).__name__}")
        for key in RESULT_FIELDS:
            _need(r, key, where)
        vid = _int(r["video_id"], f"{where}.video_id")
        cid = _int(r["category_id"], f"{where}.category_id")
        if vid not in gt.videos:
            raise ValueError(f"{where}: unknown video_id {vid} (not in the ground truth)")
        if cid not in gt.categories:
            raise ValueError(f"{where}: unknown category_id {cid} (not in the ground truth)")
        score = _score(r["score"], where)
        rles, areas = _instance(r, f"{where} (video {vid})", gt.videos[vid])
        out.append(Instance(i + 1, vid, cid, score, False, rles, areas, _mean_nonzero(areas)))
    return out


def make_result(video_id: int, category_id: int, score: float, masks) -> dict:
    """One result entry from binary masks ``[T, H, W]`` (numpy or torch); empty frames -> null."""
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected [T, H, W], got shape {tuple(masks.shape)}")
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))  # [H, W, T]
    rles = mask_utils.encode(fortran)
    nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
    segs = [
        {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}
        if keep
        else None
        for r, keep in zip(rles, nonempty, strict=True)
    ]
    return {
        "video_id": int(video_id),
        "category_id": int(category_id),
        "score": float(score),
        "segmentations": segs,
    }


def _jsonable(results: list) -> list:
    """Plain-JSON copy: numpy scalars -> Python, bytes counts -> str; checks fields and scores."""
    out = []
    for i, r in enumerate(results):
        where = f"result {i}"
        for key in RESULT_FIELDS:
            _need(r, key, where)
        segs = []
        for s in r["segmentations"]:
            if s:
                counts = s["counts"]
                if isinstance(counts, bytes):
                    counts = counts.decode("ascii")
                s = {"size": [int(x) for x in s["size"]], "counts": counts}
            segs.append(s or None)
        out.append(
            {
                "video_id": _int(r["video_id"], f"{where}.video_id"),
                "category_id": _int(r["category_id"], f"{where}.category_id"),
                "score": _score(r["score"], where),
                "segmentations": segs,
            }
        )
    return out


def write_results(results: list, path: str | Path) -> Path:
    """Write results to ``path``: a ``.zip`` holds ``results.json`` at its root, else plain JSON."""
    path = Path(path)
    text = json.dumps(_jsonable(results), separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("results.json", text)
    else:
        path.write_text(text)
    return path


def write_submission(results: list, out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir/results.json`` and ``out_dir/results.zip`` (the CodaLab submission)."""
    out_dir = Path(out_dir)
    return (
        write_results(results, out_dir / "results.json"),
        write_results(results, out_dir / "results.zip"),
    )
