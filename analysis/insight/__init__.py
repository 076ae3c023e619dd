"""Conversation intelligence on top of per-utterance signals: text sentiment, prosody against the
speaker's own baseline, the sarcasm cross-check, speaker roles and the escalation risk with alerts.

Everything here is causal (an utterance only sees what came before it), so the live path and the
batch path give the same scores.
"""
