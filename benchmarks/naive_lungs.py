"""The yardstick for `lungs`: a naive threshold prototype, as one would first write it.

Threshold at −320 HU, drop air that touches the image border, keep the two largest components,
closing, hole filling; read with SimpleITK, full-resolution scipy.ndimage throughout.
    python benchmarks/naive_lungs.py DICOM_FOLDER OUT.nii.gz
"""

import sys
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

t0 = time.perf_counter()
reader = sitk.ImageSeriesReader()
series = max(reader.GetGDCMSeriesIDs(sys.argv[1]), key=lambda s: len(reader.GetGDCMSeriesFileNames(sys.argv[1], s)))
reader.SetFileNames(reader.GetGDCMSeriesFileNames(sys.argv[1], series))
image = reader.Execute()
hu = sitk.GetArrayFromImage(image)
t1 = time.perf_counter()
labels, n = ndi.label(hu < -320)
touching = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
sizes = np.bincount(labels.ravel(), minlength=n + 1)
sizes[touching] = 0
sizes[0] = 0
lungs = np.isin(labels, np.argsort(sizes)[-2:])
sx, sy, sz = image.GetSpacing()
r = [max(1, int(round(2.0 / s))) for s in (sz, sy, sx)]  # a 2 mm ball
zz, yy, xx = np.mgrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
lungs = ndi.binary_fill_holes(ndi.binary_closing(lungs, (zz / r[0]) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2 <= 1))
t2 = time.perf_counter()
out = sitk.GetImageFromArray(lungs.astype(np.uint8))
out.CopyInformation(image)
sitk.WriteImage(out, sys.argv[2], useCompression=True)
print(f"naive: {lungs.sum() * np.prod(image.GetSpacing()) / 1000:.0f} ml; load {t1 - t0:.2f} s, isolation {t2 - t1:.2f} s")
