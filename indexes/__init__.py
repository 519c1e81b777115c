"""FAISS and BM25 indexes on disk: factory choice, building and searching, versioned index folders."""
