"""The HDSU paper's figures (metrics.paper_metrics) on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from steuops.metrics import paper_metrics

# columns: 0 = the forget class, 1 and 2 retained
TRUTH = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [0, 0, 1]])


def test_forgetting_rate_and_knowledge_preservation_by_hand():
    before = TRUTH.copy()  # a perfect original
    after = TRUTH.copy()
    after[:, 0] = [0, 1, 0, 0, 0, 0]  # one of the two forget notes still predicted
    after[5] = [0, 1, 0]  # one of the four retain notes now wrong
    out = paper_metrics(TRUTH, before, after, [0], 0.0005)
    assert out["forget_accuracy_before"] == 1.0 and out["forget_accuracy_after"] == 0.5
    assert out["forgetting_rate"] == pytest.approx(0.5)
    assert out["retain_accuracy_before"] == 1.0 and out["retain_accuracy_after"] == 0.75
    assert out["knowledge_preservation"] == pytest.approx(0.75)
    assert out["params_percent"] == pytest.approx(0.05)
    assert "preservation_by_level" not in out


def test_preservation_by_level_groups_the_retain_notes_and_skips_the_forget_ones():
    after = TRUTH.copy()
    after[:, 0] = 0
    after[3] = [0, 1, 0]  # the retain note at level 2 is now wrong
    levels = np.array([4, 4, 2, 2, 0, 1])  # forget notes (rows 0, 1) never count in a level's preservation
    out = paper_metrics(TRUTH, TRUTH, after, [0], 0.0, levels)
    by = out["preservation_by_level"]
    assert by["L4"] == {"notes": 0, "preservation": None}
    assert by["L2"] == {"notes": 2, "preservation": pytest.approx(0.5)}
    assert by["L1"]["preservation"] == 1.0 and by["none"]["preservation"] == 1.0
    assert out["forgetting_rate"] == 1.0


def test_no_forget_note_or_an_original_that_never_predicted_it_gives_none():
    truth = TRUTH[2:]
    out = paper_metrics(truth, truth, truth, [0], 0.0)
    assert out["forget_accuracy_before"] is None and out["forgetting_rate"] is None
    never = TRUTH.copy()
    never[:, 0] = 0
    assert paper_metrics(TRUTH, never, never, [0], 0.0)["forgetting_rate"] is None
