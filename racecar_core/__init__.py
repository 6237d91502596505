"""racecar_core: RR ("racecar") training, its baselines (Std, Ort, Pre) and the SVD analysis of
"Reviving Autoencoder Pretraining" (Xie & Thuerey, 2022), in PyTorch."""

__version__ = "0.1.0"
