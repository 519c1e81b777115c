"""Search-time defaults of the FAISS indexes, apart from faiss itself so configuration can name them cheaply."""

DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 128
