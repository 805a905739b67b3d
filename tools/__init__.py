"""Developer tools that run offline, next to (not inside) data preparation, training and serving."""
