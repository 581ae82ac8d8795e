"""The edit pipeline: load_model -> collect_factors -> eigendecompose -> edit -> evaluate -> export."""
