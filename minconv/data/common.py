"""What the data modules share: the error type, file kinds and dataset constants."""

# IDX type codes -> big-endian dtypes (http://yann.lecun.com/exdb/mnist/ file format)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp"}
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_STATS = (0.2860, 0.3530)  # pixel mean and std of the training images, in [0, 1]


class DataError(ValueError):
    """A data file that cannot be used; the message names the file."""
