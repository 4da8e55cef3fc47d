"""pfsxport: FSx for Lustre-style export of a parallel file system to S3, over MPI."""

__version__ = "0.1.0"
