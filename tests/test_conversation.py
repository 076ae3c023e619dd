from emotivoice.analysis.conversation import Span, conversation_metrics


def test_metrics_of_a_known_exchange():
    spans = [
        Span("agent", 0.0, 4.0, words=10),  # 4 s, 150 wpm
        Span("customer", 3.0, 6.0, words=6),  # cuts in 1 s before the agent stops
        Span("customer", 6.5, 8.0, words=3),  # same run: monologue 3.0 -> 8.0
        Span("agent", 11.0, 12.0, words=2),  # after a 3 s silence
        Span("customer", 11.9, 13.0, words=2),  # 0.1 s overlap: not an interruption
    ]
    per, call = conversation_metrics(spans, duration_s=20.0)
    assert per["agent"]["talk_time_s"] == 5.0 and per["customer"]["talk_time_s"] == 5.6
    assert per["agent"]["words_per_minute"] == 144.0
    assert per["customer"]["interruptions_made"] == 1 and per["agent"]["interrupted_by"] == {"customer": 1}
    assert per["agent"]["interruptions_made"] == 0
    assert per["customer"]["longest_monologue_s"] == 5.0
    assert call["overlap_s"] == 1.1
    assert call["long_silences"] == 2 and call["non_talk_s"] == 10.0  # 8 -> 11 and 13 -> 20
    assert round(per["agent"]["talk_share"] + per["customer"]["talk_share"], 3) == 1.0


def test_empty_call():
    per, call = conversation_metrics([], duration_s=5.0)
    assert per == {} and call["non_talk_s"] == 5.0
