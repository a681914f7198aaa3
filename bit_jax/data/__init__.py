"""The data: dataset names to sources with stable example ids (TFDS, image folders, numpy,
digits), k-shot/fraction/holdout subsets, and the tf.data input pipeline."""
