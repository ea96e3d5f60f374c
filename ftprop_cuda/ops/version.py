"""The package version, written once here (torch-free; ftprop_cuda.__version__ re-exports it)."""
__version__ = "0.1.0"
