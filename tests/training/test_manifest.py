"""The training manifest: what a model folder's network learnt, its ancestors' included, and
the written reviews the combiner fit may therefore treat as unseen."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from pipeline.training.manifest import read_manifest, trained_ids, write_manifest


def test_a_manifest_inherits_the_folder_it_was_fine_tuned_from(tmp_path):
    parent, child = tmp_path / "parent", tmp_path / "child"
    parent.mkdir()
    child.mkdir()
    with gzip.open(parent / "training_manifest.json.gz", "wt") as fh:  # as shipped
        json.dump({"train": ["WEA0001", "seed-1#c0"], "dev": ["seed-2"]}, fh)
    write_manifest(child / "training_manifest.json",
                   {"train": pd.DataFrame({"id": ["WEB0002", "WEB0002#c1"]})},
                   inherit_from=parent)
    assert read_manifest(child)["inherited"] == {"WEA0001", "seed-1", "seed-2"}
    # clause rows count as their review
    assert trained_ids(child) == {"WEB0002", "WEA0001", "seed-1", "seed-2"}
    assert trained_ids(tmp_path) is None  # no manifest: nothing is known


def test_a_manifest_without_a_parent_lists_its_own_rows(tmp_path):
    write_manifest(tmp_path / "training_manifest.json",
                   {"train": pd.DataFrame({"id": ["b", "a"]})}, inherit_from=tmp_path / "none")
    assert read_manifest(tmp_path) == {"train": {"a", "b"}}


@pytest.mark.shared
def test_the_combiner_fit_uses_only_written_reviews_the_network_never_saw():
    from pipeline.config import shared_dir
    from pipeline.training.combiner_fit import dev_rows
    from pipeline.training.data import extra_rows

    if shared_dir() is None:
        pytest.skip("needs ../shared")
    written = extra_rows()
    seen = set(written["id"][: len(written) // 2])
    rows = dev_rows(shared_dir(), seen)
    got = set(rows.loc[rows["set"] == "written", "id"])
    assert got == set(written["id"]) - seen
    assert not (dev_rows(shared_dir(), None)["set"] == "written").any()
