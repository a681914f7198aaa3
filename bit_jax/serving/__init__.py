"""A trained model leaving the library: loaded back from a workdir or .npz (fine_tuned.py),
written as a timm / Hugging Face hub folder (timm_folder.py) or as ONNX (onnx_export.py)."""
