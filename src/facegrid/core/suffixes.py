"""Which file names are images: one list for every part that tells images by their suffix.

Finding the images of a folder to detect in, and keying a WIDER result by an
image's path less its suffix, must agree on what an image is: an image found
but keyed with its suffix would get a result file no evaluation looks for.
The two layers that do so (:mod:`facegrid.infer`, :mod:`facegrid.wider`)
both stand above :mod:`facegrid.core`, so the list lives here, where either
may import it.
"""

#: Suffixes of image files, lower case: the formats facegrid's decoder reads that cameras and tools write.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
