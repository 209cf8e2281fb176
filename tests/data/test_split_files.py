"""``python -m gmpvis.data.split``: train / holdout files that the evaluator scores."""

from __future__ import annotations

import json

from gmpvis.data.split import main, split_videos
from gmpvis.data.synthetic import generate_dataset
from gmpvis.eval import evaluate


def test_split_files_partition_videos_and_score_perfectly(tmp_path):
    ann = generate_dataset(tmp_path / "ds", 6, num_frames=3, height=48, width=48, seed=1)
    main(["--ann", str(ann), "--out-dir", str(tmp_path / "split"), "--holdout-fraction", "0.34"])
    train = json.loads((tmp_path / "split" / "train.json").read_text())
    holdout = json.loads((tmp_path / "split" / "holdout.json").read_text())
    source = json.loads(ann.read_text())
    ids = [v["id"] for v in source["videos"]]
    expected_train, expected_holdout = split_videos(ids, 0.34, seed=0)
    assert [v["id"] for v in train["videos"]] == expected_train
    assert [v["id"] for v in holdout["videos"]] == expected_holdout
    assert {a["video_id"] for a in holdout["annotations"]} <= set(expected_holdout)
    n_source = sum(a["video_id"] in expected_holdout for a in source["annotations"])
    assert len(holdout["annotations"]) == n_source > 0
    # the holdout ground truth, given back as results, is a perfect score
    results = [
        {"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
         "segmentations": a["segmentations"]}
        for a in holdout["annotations"]
    ]  # fmt: skip
    assert evaluate(holdout, results)["AP"] == 1.0
