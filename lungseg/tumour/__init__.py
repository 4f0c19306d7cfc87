"""Tumour: the 2D U-Net, its loss, augmentation, training, datasets, prediction and the lesion table."""
