"""Document job types: ``document_ingestion`` (one uploaded document through the pipeline into the vector store)."""
