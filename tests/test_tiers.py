from emotivoice.analysis.emotion.tiers import BASE_EMOTIONS, COMPLEX, GRANULAR, complex_emotion, granular


def probs(**kw):
    rest = (1.0 - sum(kw.values())) / (len(BASE_EMOTIONS) - len(kw))
    return {e: kw.get(e, rest) for e in BASE_EMOTIONS}


def test_anger_bands_follow_the_seed():
    assert granular(probs(anger=0.8))[0].label == "rage"
    assert granular(probs(anger=0.5))[0].label == "frustration"
    assert granular(probs(anger=0.2, neutral=0.7))[1].label == "resentment"
    assert [g.band for g in granular(probs(anger=0.7))][:1] == ["high"]  # 0.7 is already high


def test_every_base_emotion_has_three_bands_and_every_pair_a_blend():
    assert set(GRANULAR) == set(BASE_EMOTIONS)
    emotive = [e for e in BASE_EMOTIONS if e != "neutral"]
    pairs = {frozenset((a, b)) for a in emotive for b in emotive if a != b}
    assert pairs == set(COMPLEX)


def test_complex_from_top_two_with_seed_names():
    assert complex_emotion(probs(happiness=0.5, surprise=0.4)) == "elation"
    assert complex_emotion(probs(sadness=0.45, anger=0.35)) == "bitterness"
    assert complex_emotion(probs(fear=0.4, sadness=0.3)) == "desperation"


def test_no_blend_when_runner_up_is_weak_or_neutral_dominates():
    assert complex_emotion(probs(anger=0.9, sadness=0.05)) is None
    assert complex_emotion(probs(neutral=0.5, anger=0.25, disgust=0.22)) is None
    assert complex_emotion(probs(anger=0.4, disgust=0.3, neutral=0.2)) == "contempt"


def test_floor_drops_faint_emotions():
    labels = {g.emotion for g in granular(probs(anger=0.9, sadness=0.05), floor=0.1)}
    assert labels == {"anger"}


def test_every_negative_emotion_table_comes_from_the_one_valence_table():
    """The sets the insight code used before the table (issue 11) are derived from it unchanged,
    in the same order (a weighted sum adds in that order; the sarcasm driver is the first maximum)."""
    from emotivoice.analysis.emotion.tiers import NEGATIVE_EMOTIONS, VALENCE, valence_weights

    assert set(BASE_EMOTIONS) <= set(VALENCE)
    assert all(0 <= x <= 1 for v in VALENCE.values() for x in (v.negative, v.hostile, v.positive))
    assert NEGATIVE_EMOTIONS == ("anger", "disgust", "fear", "sadness")  # sink, quarters
    assert list(valence_weights("negative").items()) == [("anger", 1.0), ("disgust", 1.0), ("contempt", 1.0),
                                                         ("sadness", 0.4), ("fear", 0.3)]  # sarcasm
    assert list(valence_weights("positive").items()) == [("happiness", 1.0), ("surprise", 0.3)]  # sarcasm
    assert list(valence_weights("hostile").items()) == [("anger", 1.0), ("disgust", 0.8), ("contempt", 0.8),
                                                        ("fear", 0.3), ("sadness", 0.3)]  # risk


def test_head_intensity_sets_the_dominant_band_but_not_neutrals_or_runners_up():
    p = probs(anger=0.5, disgust=0.25)
    assert granular(p)[0].label == "frustration"
    strong = granular(p, intensity=0.9)
    assert (strong[0].label, strong[0].band, strong[0].intensity) == ("rage", "high", 0.9)
    assert strong[1].emotion == "disgust" and strong[1].band == "low"  # its own probability, 0.25
    assert granular(p, intensity=0.1)[0].label == "resentment"
    calm = granular(probs(neutral=0.8), intensity=0.1)  # neutral has no acted intensity: probability bands
    assert calm[0].label == "calm"
