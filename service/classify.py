"""Zero-shot classification: an image against labels embedded through prompt templates."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.errors import validation_error
from service.limits import check_text
from service.schemas import ClassifyResponse, LabelProbability
from service.search import ms_since, require_text_tower
from service.settings import Settings
from service.state import Resources
from service.templates import template_problem


def parse_labels(values: list[str] | None, settings: Settings) -> list[str]:
    """Repeated ``labels`` fields, or a single comma-separated one; stripped, blanks and repeats dropped."""
    values = values or []
    if len(values) == 1:
        values = values[0].split(",")
    given = [v.strip() for v in values if v.strip()]
    if len(given) > settings.max_labels:  # counted as sent (as the schema's maxItems is), before repeats go
        raise validation_error(("body", "labels"), f"at most {settings.max_labels} labels, got {len(given)}",
                               "too_long")
    labels = list(dict.fromkeys(given))
    if not labels:
        raise validation_error(("body", "labels"),
                               "give at least one label (repeat the field, or separate with commas)", "missing")
    for i, label in enumerate(labels):
        check_text(label, settings, ("body", "labels", i))
    return labels


def parse_templates(values: list[str] | None, settings: Settings) -> list[str]:
    """Repeated ``templates`` fields (commas are kept: a template may contain them); default: the settings'."""
    if not values:
        return list(settings.default_templates)
    if len(values) > settings.max_templates:  # every label is embedded once per template
        raise validation_error(("body", "templates"), f"at most {settings.max_templates} templates", "too_long")
    templates = list(dict.fromkeys(v.strip() for v in values))  # a blank one is refused below: it has no slot
    for i, template in enumerate(templates):
        check_text(template, settings, ("body", "templates", i))
        if problem := template_problem(template):
            raise validation_error(("body", "templates", i), problem, "value_error")
    return templates


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def label_weights(res: Resources, labels: list[str], templates: list[str]) -> np.ndarray:
    """(L, dim) class embeddings, each label averaged over the templates; cached per (labels, templates)."""
    return res.label_weights.get_or_compute(
        (tuple(labels), tuple(templates)), lambda: res.encoder.zero_shot_weights(labels, templates)
    )


def probabilities(logit_scale: float, image_vec: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(L,) softmax over logit_scale * cosine(image, label); image_vec (dim,), weights (L, dim)."""
    logits = logit_scale * (weights @ image_vec)  # (L,)
    return softmax(logits.astype(np.float64))


async def classify_image(
    res: Resources, image: Image.Image, labels: list[str], templates: list[str]
) -> ClassifyResponse:
    """Every label with its probability for ``image``, most probable first."""
    require_text_tower(res)
    started = time.perf_counter()
    image_vec = await res.image_batcher.submit(image)  # (dim,)
    weights = await run_in_threadpool(label_weights, res, labels, templates)  # (L, dim)
    probs = probabilities(res.encoder.logit_scale, image_vec, weights)
    order = np.argsort(-probs, kind="stable")  # best first; ties keep the order given
    return ClassifyResponse(
        labels=[LabelProbability(label=labels[i], probability=float(probs[i])) for i in order],
        templates=templates,
        took_ms=ms_since(started),
    )
