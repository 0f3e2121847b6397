"""Categories people chose for products (the service's feedback) applied to a catalogue's labels."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from placedemarche.data.catalog import Catalog


@dataclass
class FeedbackApplied:
    """What :func:`apply_feedback` did: the relabelled catalogue and how many labels it touched.

    ``overridden``: products whose catalogue category the feedback replaced; ``confirmed``:
    feedback equal to the catalogue's category; ``added``: products that had no category and
    got one; ``unknown``: product ids in the feedback that the catalogue does not hold (not
    used: their text and photo are not in the catalogue); ``new_categories``: categories the
    feedback introduced that no catalogue product had.
    """

    catalog: Catalog
    overridden: int = 0
    confirmed: int = 0
    added: int = 0
    unknown: list[str] = field(default_factory=list)
    new_categories: list[str] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return self.overridden + self.confirmed + self.added

    def summary(self) -> str:
        """One line for people: what was applied and what was not."""
        text = (f"feedback: {self.applied} categories applied ({self.overridden} overriding the catalogue's, "
                f"{self.added} for unlabelled products, {self.confirmed} the same)")
        if self.unknown:
            shown = ", ".join(self.unknown[:5]) + (" ..." if len(self.unknown) > 5 else "")
            text += f"; {len(self.unknown)} product id(s) not in the catalogue, not used: {shown}"
        if self.new_categories:
            text += f"; new categories: {', '.join(self.new_categories)}"
        return text


def apply_feedback(catalog: Catalog, corrections: Mapping[str, str]) -> FeedbackApplied:
    """The catalogue with each product's category replaced by the one people chose for it.

    ``corrections`` maps product ids to categories (the latest feedback per product). Feedback
    *overrides* the catalogue's label, and gives a label to products that had none (they then
    pass ``validated(labels=True)`` instead of being dropped). It adds no product: feedback for
    an id the catalogue lacks is listed in ``unknown``, since training needs the product's text
    and photo, which only the catalogue holds.

    Usage::

        result = apply_feedback(catalog, {"p1": "Watches"})
        catalog = result.catalog.validated(text="both", image=False, labels=True)
    """
    labels = list(catalog.labels) if catalog.labels is not None else [""] * len(catalog)
    before = {label for label in labels if label.strip()}
    position = {product_id: i for i, product_id in enumerate(catalog.ids)}
    result = FeedbackApplied(catalog=catalog)
    for product_id, category in corrections.items():
        category = (category or "").strip()
        i = position.get(product_id)
        if i is None:
            result.unknown.append(product_id)
            continue
        if not category:
            continue
        if not labels[i].strip():
            result.added += 1
        elif labels[i] == category:
            result.confirmed += 1
        else:
            result.overridden += 1
        labels[i] = category
    result.new_categories = sorted({label for label in labels if label.strip()} - before)
    if corrections:
        result.catalog = replace(catalog, labels=labels, validated_for=set())
    return result
