"""Ingestion, the write side: load documents, encode them into shards (locally or on Ray), build the index folder, fit
calibration, and change a built index in place (`htp add`, `htp delete`)."""
