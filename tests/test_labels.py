"""Every label mapping against the tables of SPEC §3."""
import numpy as np
import pytest

from fer_pipeline import labels as L


def test_affwild2_order_and_header():
    assert L.CLASSES == ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness",
                         "Surprise", "Other")
    assert L.NUM_CLASSES == 8 and L.IGNORE == -1
    assert L.AFFWILD2_HEADER == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    assert L.SUBMISSION_HEADER.startswith("image_location,Neutral,")


@pytest.mark.parametrize("votes,expected", [
    # columns: neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], L.NEUTRAL),
    ([1, 7, 2, 0, 0, 0, 0, 0, 0, 0], L.HAPPINESS),
    ([0, 0, 6, 0, 0, 0, 4, 0, 0, 0], L.SURPRISE),
    ([0, 0, 0, 5, 0, 0, 0, 0, 0, 0], L.SADNESS),
    ([0, 0, 0, 0, 6, 2, 0, 0, 0, 0], L.ANGER),
    ([0, 0, 0, 0, 1, 6, 0, 0, 0, 0], L.DISGUST),
    ([0, 0, 2, 0, 0, 0, 8, 0, 0, 0], L.FEAR),
    ([2, 0, 0, 0, 0, 0, 0, 8, 0, 0], L.OTHER),        # contempt -> Other
    ([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], L.IGNORE),       # unknown majority -> dropped
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], L.IGNORE),      # not a face -> dropped
    ([0] * 10, L.IGNORE),
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], L.NEUTRAL),      # tie: first column wins
])
def test_ferplus_plurality(votes, expected):
    assert L.ferplus_plurality(votes) == expected


@pytest.mark.parametrize("votes,expected", [
    # neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
    ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], L.IGNORE),     # single vote dropped: 4 of 9 is not > half
    ([5, 0, 0, 1, 3, 1, 0, 0, 0, 0], L.NEUTRAL),    # singles dropped: 5 of 8 > half
    ([6, 4, 0, 0, 0, 0, 0, 0, 0, 0], L.NEUTRAL),    # 6 of 10
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], L.IGNORE),     # a tie is no majority
    ([4, 4, 0, 0, 0, 0, 0, 0, 1, 1], L.IGNORE),     # 4 of 8 after singles: not > half
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], L.IGNORE),     # only single votes
    ([3, 0, 0, 0, 0, 0, 0, 0, 7, 0], L.IGNORE),     # unknown majority
    ([2, 0, 0, 0, 0, 0, 0, 0, 0, 8], L.IGNORE),     # not-a-face majority
    ([0, 0, 0, 0, 0, 0, 0, 7, 3, 0], L.OTHER),      # contempt -> Other
    ([1, 7, 1, 0, 0, 0, 0, 0, 1, 0], L.HAPPINESS),  # 7 of 7 after singles
    ([2, 0, 3, 0, 0, 0, 0, 0, 0, 0], L.SURPRISE),   # 3 of 5
    ([0, 0, 0, 2, 2, 0, 0, 0, 0, 0], L.IGNORE),
])
def test_ferplus_majority_rule_of_the_fer_plus_paper(votes, expected):
    assert L.ferplus_majority(votes) == expected


def test_ferplus_vote_sample_follows_the_votes():
    rng = np.random.default_rng(0)
    draws = [L.ferplus_vote_sample([6, 2, 0, 0, 0, 0, 0, 2, 0, 0], rng) for _ in range(4000)]
    freq = np.bincount(draws, minlength=8) / len(draws)
    assert freq[L.NEUTRAL] == pytest.approx(0.6, abs=0.03)
    assert freq[L.HAPPINESS] == pytest.approx(0.2, abs=0.03)
    assert freq[L.OTHER] == pytest.approx(0.2, abs=0.03)
    assert L.ferplus_vote_sample([0] * 8 + [4, 6], rng) == L.IGNORE


def test_ferplus_soft_discards_unknown_and_maps_contempt():
    soft = L.ferplus_soft([2, 4, 0, 0, 0, 0, 0, 2, 1, 1])
    assert soft.shape == (8,)
    np.testing.assert_allclose(soft[[L.NEUTRAL, L.HAPPINESS, L.OTHER]], [0.25, 0.5, 0.25])
    assert soft.sum() == pytest.approx(1.0)
    assert L.ferplus_soft([0] * 8 + [3, 3]).sum() == 0


def test_ferplus_rejects_wrong_width():
    with pytest.raises(ValueError):
        L.ferplus_majority([1, 2, 3])


def test_rafdb_table():
    # 1..7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral
    expected = {1: L.SURPRISE, 2: L.FEAR, 3: L.DISGUST, 4: L.HAPPINESS, 5: L.SADNESS,
                6: L.ANGER, 7: L.NEUTRAL}
    assert {k: L.rafdb_to_id(k) for k in range(1, 8)} == expected
    assert all(L.ID_TO_RAFDB[v] == k for k, v in expected.items())
    for bad in (0, 8):
        with pytest.raises(ValueError):
            L.rafdb_to_id(bad)


def test_affectnet_table():
    # 0..10 = Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt, None, Uncertain, Non-Face
    expected = [L.NEUTRAL, L.HAPPINESS, L.SADNESS, L.SURPRISE, L.FEAR, L.DISGUST, L.ANGER,
                L.OTHER, L.OTHER, L.IGNORE, L.IGNORE]
    assert [L.affectnet_to_id(i) for i in range(11)] == expected
    assert L.affectnet_to_id(8, none_to_other=False) == L.IGNORE
    with pytest.raises(ValueError):
        L.affectnet_to_id(11)


def test_folder_names():
    assert L.folder_to_id("happy") == L.HAPPINESS
    assert L.folder_to_id("Surprise") == L.SURPRISE
    assert L.folder_to_id("contempt") == L.OTHER
    assert L.folder_to_id("joy", {"joy": 4}) == L.HAPPINESS
    with pytest.raises(KeyError):
        L.folder_to_id("boredom")
    with pytest.raises(KeyError):
        L.folder_to_id("happy", {"joy": 4})
    with pytest.raises(ValueError):
        L.folder_to_id("x", {"x": 9})


def test_cfcsp_maps():
    assert L.COARSE_CLASSES == ("Neutral", "Happiness", "Surprise", "Other", "Negative")
    assert L.NEGATIVE_CLASSES == ("Anger", "Disgust", "Fear", "Sadness")
    assert list(L.TO_COARSE) == [0, 4, 4, 4, 1, 4, 2, 3]
    assert list(L.TO_NEGATIVE) == [-1, 0, 1, 2, -1, 3, -1, -1]
    labels = np.array([-1, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(L.to_coarse(labels), [-1, 0, 4, 4, 4, 1, 4, 2, 3])
    np.testing.assert_array_equal(L.to_negative(labels), [-1, -1, 0, 1, 2, -1, 3, -1, -1])
    # the inverse maps send every coarse / negative class back to its 8-class name
    for c, name in enumerate(L.COARSE_CLASSES[:-1]):
        assert L.CLASSES[L.COARSE_TO_ID[c]] == name
    for k, name in enumerate(L.NEGATIVE_CLASSES):
        assert L.CLASSES[L.NEGATIVE_TO_ID[k]] == name


def test_check_labels_names_source_and_position():
    np.testing.assert_array_equal(L.check_labels(np.array([-1, 0, 7]), "x"), [-1, 0, 7])
    with pytest.raises(ValueError, match=r"f\.txt: label 8 at position 3"):
        L.check_labels(np.array([0, 1, 8, -2]), "f.txt")
