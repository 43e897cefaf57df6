"""The domain core: what several consumers share about a project and its SQL, knowing nothing of Kafka."""
