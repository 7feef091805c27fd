"""The two runtimes kept per model version: ONNX Runtime (forward) and PyTorch (gradients)."""
