"""The model bundle: the only contract between training and serving.

Training writes a bundle with :func:`models.bundle.write_bundle`; everything
else reads it with :func:`models.bundle.load_bundle`, which refuses an unknown
schema version or a file whose checksum does not match the manifest.
"""

from models.bundle import Bundle, BundleError, load_bundle, write_bundle

__all__ = ["Bundle", "BundleError", "load_bundle", "write_bundle"]
