"""Task metrics computed in Python: classification, tagging (entity-level F1), SQuAD."""

from __future__ import annotations

import collections
import re
import string

import numpy as np

from tfbert.data.tagging import bio_entities


def precision_recall_f1(hits: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (0.0 where a ratio is undefined).

    Example:

    >>> precision_recall_f1(hits=2, predicted=4, gold=2)
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.6666666666666666}
    """
    precision = hits / predicted if predicted else 0.0
    recall = hits / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def classification_metrics(truth: np.ndarray, logits: np.ndarray, labels: list[str]) -> dict:
    """Loss, accuracy, macro F1 and per-label precision/recall/F1/support.

    Args:
        truth: int `[N]` label ids.
        logits: float `[N, C]`.
        labels: the C label names.

    Example:

    >>> m = classification_metrics(np.array([0, 1]), np.array([[2.0, 0.0], [3.0, 0.0]]),
    ...                            ["neg", "pos"])
    >>> m["accuracy"], m["labels"]["neg"]["precision"], m["labels"]["pos"]["f1"]
    (0.5, 0.5, 0.0)
    """
    truth = np.asarray(truth)
    logits = np.asarray(logits, np.float64)
    predicted = logits.argmax(-1)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    per_label = {}
    for i, name in enumerate(labels):
        hits = int(np.sum((predicted == i) & (truth == i)))
        per_label[name] = {**precision_recall_f1(hits, int(np.sum(predicted == i)),
                                                 int(np.sum(truth == i))),
                           "support": int(np.sum(truth == i))}
    return {
        "examples": int(len(truth)),
        "loss": float(-log_probs[np.arange(len(truth)), truth].mean()),
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(np.mean([m["f1"] for m in per_label.values()])),
        "labels": per_label,
    }


def tagging_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Token accuracy and entity-level precision/recall/F1 (micro, and per type).

    An entity counts as found only with its exact type and boundaries
    (conlleval's rule), read from BIO tags by `bio_entities`.

    Example:

    >>> m = tagging_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    >>> round(m["accuracy"], 3), m["f1"]
    (0.667, 0.0)
    """
    tokens = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, predicted, strict=True)
                for a, b in zip(g, p, strict=True))
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for g, p in zip(gold, predicted, strict=True):
        gold_entities, found = bio_entities(g), bio_entities(p)
        for kind, *_ in gold_entities:
            counts[kind][2] += 1
        for entity in found:
            counts[entity[0]][1] += 1
            counts[entity[0]][0] += entity in gold_entities
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    per_type = {kind: {**precision_recall_f1(*c), "support": c[2]}
                for kind, c in sorted(counts.items())}
    return {"accuracy": right / tokens if tokens else 0.0, **precision_recall_f1(*totals),
            "entities": per_type}


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, no punctuation, articles or extra spaces.

    Example:

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)  # both empty: a right "no answer"
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """Exact match and token F1, each the best over an example's gold answers.

    Unanswerable questions have the gold answer "" (SQuAD v2.0's scoring).

    Example:

    >>> m = squad_metrics(["the cat", "dog"], [["Cat"], ["a red dog", "dogs"]])
    >>> m["exact_match"], round(m["f1"], 3)  # "dog" vs "red dog": P 1, R 1/2
    (0.5, 0.833)
    """
    exact = [max(float(normalize_answer(p) == normalize_answer(g)) for g in gold)
             for p, gold in zip(predictions, golds, strict=True)]
    f1 = [max(_token_f1(p, g) for g in gold) for p, gold in zip(predictions, golds, strict=True)]
    n = max(len(predictions), 1)
    return {"exact_match": sum(exact) / n, "f1": sum(f1) / n}
