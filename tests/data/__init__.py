"""Tests of the dataset modules beyond MNIST (dsprites, imagefolder) and of ``robust-vae datasets``."""
