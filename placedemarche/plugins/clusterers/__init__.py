"""Built-in clusterer plugins: kmeans, agglomerative (Ward), gmm, spectral and hdbscan."""
