"""Built-in classifier heads (``pm train --classifier``): one plugin per module, each a thin
:class:`~placedemarche.Classifier` around a scikit-learn estimator kept in ``estimator_``."""
