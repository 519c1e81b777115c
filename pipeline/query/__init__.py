"""The query stage, the read side: one validated search request, dense / BM25 / hybrid rankings, `where` filters,
fusion, the calibration as queries apply it, and the hits returned (no fitting code, no write path)."""
