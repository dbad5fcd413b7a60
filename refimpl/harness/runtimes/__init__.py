"""The runtimes behind the onnxruntime and torch-mha columns."""
