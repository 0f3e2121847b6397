"""Audit: the products whose declared category is probably wrong (confident learning).

``options`` (:class:`AuditOptions`, cleanlab's choices; light to import), ``suspects``
(:func:`audit_catalog`: out-of-fold probabilities from the classifier's k-fold, then
cleanlab's ``find_label_issues``, label-quality ranking and health summary) and ``apply``
(:func:`apply_review`: a corrected copy of a catalogue from a reviewed suspects.csv). The
report files are written by ``placedemarche.report.audit.write_audit_report``.

Usage::

    from placedemarche.audit.suspects import audit_catalog
    from placedemarche.classify import TrainConfig
    from placedemarche.data.catalog import load_catalog
    from placedemarche.report.audit import write_audit_report

    catalog = load_catalog("shared/data/flipkart").validated()
    result = audit_catalog(catalog, TrainConfig(text="tfidf", image="efficientnet-lite0", fusion="mean"))
    write_audit_report(result, "audit/")   # suspects.csv, categories.csv, results.json, report.html
"""
