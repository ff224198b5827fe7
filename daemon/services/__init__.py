"""The services (documents, search, memory, episodes): they compose store + embed + caches."""
