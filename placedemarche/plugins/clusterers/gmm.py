"""The `gmm` clusterer: a Gaussian mixture, diagonal covariances by default."""

from __future__ import annotations

from placedemarche import Clusterer, hookimpl


class GaussianMixtureClusterer(Clusterer):
    """Each product goes to the most probable component of a Gaussian mixture fitted by EM.

    Covariances are diagonal by default: a full covariance has d² parameters per component,
    which 1,000-wide features (CNN embeddings, fusions) cannot estimate from a thousand
    products, while a diagonal one has d. ``covariance_type="full"`` suits low-dimensional
    spaces such as the 2-D t-SNE map.

    Args:
        n_clusters: number of mixture components (the evaluator passes the number of categories).
        covariance_type: ``diag``, ``full``, ``tied`` or ``spherical``.
        n_init: EM restarts; the best likelihood is kept.
        reg_covar: added to the covariances' diagonal, so near-constant features do not make
            them singular.
        random_state: seed of the initialisation (k-means).

    Usage::

        labels = GaussianMixtureClusterer(n_clusters=7, random_state=0).fit_predict(X)
    """

    name = "gmm"
    description = "Gaussian mixture model (diagonal covariances by default)"

    def __init__(self, n_clusters: int = 8, covariance_type: str = "diag", n_init: int = 1,
                 reg_covar: float = 1e-6, random_state: int = 0):
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.reg_covar = reg_covar
        self.random_state = random_state

    def fit_predict(self, X, y=None):
        from sklearn.mixture import GaussianMixture

        X = self._validate_data(X)

        self.model_ = GaussianMixture(n_components=self.n_clusters, covariance_type=self.covariance_type,
                                      n_init=self.n_init, reg_covar=self.reg_covar,
                                      random_state=self.random_state)
        self.labels_ = self.model_.fit_predict(X)
        return self.labels_


@hookimpl
def register_clusterers(register):
    register(GaussianMixtureClusterer)
