"""Job types, one module each; every module here registers itself with the registry on import."""
