"""Classification: supervised frozen-feature heads and fine-tuned CNNs, stratified k-fold
cross-validation, a saved model directory, and prediction on new products.

A model has one *block* per extractor: a text or image extractor plugin + a scaler + a
classifier head plugin (frozen features), or a fine-tuned Keras network (image only). Several
extractors of one modality may be combined (``text=["tfidf", "bert"]``). The blocks combine
into one prediction per *group* of modalities, ``text``, ``image`` and ``text+image``: either
by a head on the concatenated scaled features (``fusion="concat"``) or by averaging the
blocks' probabilities (``"mean"``). The groups of one modality are kept, so a product lacking
its image or its text is predicted from what it has.

The modules: ``config`` (:class:`TrainConfig`), ``blocks`` (scaler, heads, combining),
``model`` (:class:`ClassifierModel`), ``crossval`` (:func:`train`), ``threshold`` (the decision
threshold), ``hierarchy`` (models below the first level of the category tree: per-level heads,
paths, hierarchical scores, a threshold per level),
``modeldir`` (:func:`save_model`, :func:`load_model`), ``modelobjects`` (the fitted objects as
model.skops, loaded without unpickling, or model.joblib) and ``predictions``
(:func:`predict_catalog`). Everything public is importable from this package, which is also
the path pickles of models saved before the split name (``placedemarche.classify.Block``).

Usage::

    from placedemarche.data.catalog import load_catalog
    from placedemarche.classify import TrainConfig, train, load_model
    from placedemarche.report.training import write_training_report

    catalog = load_catalog("shared/data/flipkart").validated()
    result = train(catalog, TrainConfig(text="tfidf", image="mobilenet:alpha=0.75", folds=5,
                                        classifier="logreg:C=0.5"), out="models/flipkart")
    write_training_report(result, "models/flipkart")   # metrics.json, report.html, ...
    print(result.summary["mean"]["accuracy"])
    model = load_model("models/flipkart")
    categories = model.predict(load_catalog("new.csv"))
"""

from placedemarche.classify.blocks import Block, BlockScaler, _hstack, make_head
from placedemarche.classify.config import FUSIONS, TrainConfig
from placedemarche.classify.crossval import TrainResult, train
from placedemarche.classify.model import ClassifierModel
from placedemarche.classify.modeldir import (MODEL_FILE, MODEL_FORMAT, NETWORK_FILE, OBJECTS_FILE, ModelError, ModelWarning,
                       library_versions, load_model, save_model)
from placedemarche.classify.predictions import MISSING_IMAGES_COUNT, MISSING_IMAGES_SHARE, PredictionResult, predict_catalog

__all__ = [
    "FUSIONS", "MISSING_IMAGES_COUNT", "MISSING_IMAGES_SHARE", "MODEL_FILE", "MODEL_FORMAT", "NETWORK_FILE",
    "OBJECTS_FILE", "Block", "BlockScaler", "ClassifierModel", "ModelError", "ModelWarning", "PredictionResult",
    "TrainConfig", "TrainResult", "library_versions", "load_model", "make_head",
    "predict_catalog", "save_model", "train",
]
